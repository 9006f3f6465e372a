-- Events per model and hour, with their safety-flagged share and p95 latency (from the events_1h rollup)
SELECT hour, model_id, sum(events) AS requests, round(sum(violating) / requests, 5) AS flagged_share,
       round(quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms_q)[2], 1) AS p95_latency_ms
FROM raiwatch.events_1h
WHERE {model_id:String} = '' OR model_id = {model_id:String}
GROUP BY hour, model_id
ORDER BY hour, model_id
