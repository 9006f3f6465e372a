-- Daily favourable share per group and its ratio to the best-treated group, groups below four-fifths first
SELECT day, model_id, attribute, group_name, decisions, round(rate, 4) AS rate, round(ratio, 3) AS ratio, round(min_window_ratio, 3) AS min_window_ratio
FROM raiwatch.fairness_daily
WHERE {model_id:String} = '' OR model_id = {model_id:String}
ORDER BY day, ratio, model_id, attribute, group_name
