-- Daily drift (PSI) per model and feature, most drifted first (optionally one model: --param model_id=NAME)
SELECT day, model_id, kind, feature, round(mean_psi, 4) AS mean_psi, round(max_psi, 4) AS max_psi, drifted_windows, windows, min_p_value
FROM raiwatch.drift_daily
WHERE {model_id:String} = '' OR model_id = {model_id:String}
ORDER BY day, max_psi DESC
