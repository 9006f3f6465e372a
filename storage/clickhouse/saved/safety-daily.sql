-- Daily safety-violation rate per model and category (optionally one model: --param model_id=NAME)
SELECT day, model_id, category, events, violations, round(rate, 5) AS rate, round(worst_window_rate, 4) AS worst_window_rate
FROM raiwatch.safety_rates_daily
WHERE {model_id:String} = '' OR model_id = {model_id:String}
ORDER BY day, model_id, category
