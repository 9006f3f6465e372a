-- Events per model and hour, with their safety-flagged share and p95 latency
SELECT toStartOfHour(ts) AS hour, model_id, count() AS events, round(countIf(length(violations) > 0) / events, 5) AS flagged_share,
       round(quantile(0.95)(latency_ms), 1) AS p95_latency_ms
FROM raiwatch.telemetry_events FINAL
WHERE {model_id:String} = '' OR model_id = {model_id:String}
GROUP BY hour, model_id
ORDER BY hour, model_id
