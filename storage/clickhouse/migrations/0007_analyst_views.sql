{#- 0007: views analysts use without knowing the internals. Plain views over the tables (FINAL,
    so a replayed or re-written row counts once); each column is named for what it holds. #}

CREATE VIEW IF NOT EXISTS {{ database }}.safety_rates_daily {{ on_cluster }}
(
    day        Date                    COMMENT 'UTC day of the windows',
    model_id   LowCardinality(String)  COMMENT 'Model',
    category   String                  COMMENT 'Safety category (model-wide: tenants are not split out)',
    events     UInt64                  COMMENT 'Events with safety data that day (sum of the windows'' n)',
    violations Float64                 COMMENT 'Events whose violations name the category',
    rate       Float64                 COMMENT 'violations / events',
    worst_window_rate Float64          COMMENT 'Highest 60 s window rate that day',
    windows    UInt64                  COMMENT 'Windows with data'
)
AS SELECT
    toDate(ts) AS day,
    model_id,
    dims['category'] AS category,
    sum(n) AS events,
    sum(value * n) AS violations,
    violations / events AS rate,
    max(value) AS worst_window_rate,
    count() AS windows
FROM {{ database }}.signals FINAL
WHERE signal = 'safety.violation_rate' AND NOT mapContains(dims, 'tenant_id')
GROUP BY day, model_id, category
COMMENT 'Daily safety-violation rate per model and category, from the 60 s signals';

CREATE VIEW IF NOT EXISTS {{ database }}.drift_daily {{ on_cluster }}
(
    day        Date                    COMMENT 'UTC day of the windows',
    model_id   LowCardinality(String)  COMMENT 'Model',
    kind       String                  COMMENT 'feature or prediction (drift.feature, drift.prediction)',
    feature    String                  COMMENT 'Feature, or the output (score, label) for predictions',
    mean_psi   Float64                 COMMENT 'Mean PSI of the windows against the reference',
    max_psi    Float64                 COMMENT 'Highest window PSI that day',
    drifted_windows UInt64             COMMENT 'Windows with PSI > 0.1 and p < 1e-4 (the FeatureDrift rule''s test)',
    windows    UInt64                  COMMENT 'Windows compared',
    min_p_value Nullable(Float64)      COMMENT 'Smallest (Bonferroni-adjusted) p-value that day'
)
AS SELECT
    toDate(ts) AS day,
    model_id,
    replaceOne(signal, 'drift.', '') AS kind,
    if(signal = 'drift.feature', dims['feature'], dims['output']) AS feature,
    avg(value) AS mean_psi,
    max(value) AS max_psi,
    countIf(value > 0.1 AND p_value < 1e-4) AS drifted_windows,
    count() AS windows,
    min(p_value) AS min_p_value
FROM {{ database }}.signals FINAL
WHERE signal IN ('drift.feature', 'drift.prediction')
GROUP BY day, model_id, kind, feature
COMMENT 'Daily drift score (PSI) per model and feature or output, from the 60 s signals';

CREATE VIEW IF NOT EXISTS {{ database }}.fairness_daily {{ on_cluster }}
(
    day        Date                    COMMENT 'UTC day of the decisions',
    model_id   LowCardinality(String)  COMMENT 'Model',
    attribute  String                  COMMENT 'Segment attribute (age_band, language...)',
    group_name String                  COMMENT 'Group of the attribute',
    decisions  UInt64                  COMMENT 'Decisions (events with outcome.favorable) of the group that day',
    favorable  UInt64                  COMMENT 'Favourable decisions',
    rate       Float64                 COMMENT 'favorable / decisions',
    best_rate  Float64                 COMMENT 'Highest daily rate of any group of the attribute',
    ratio      Nullable(Float64)       COMMENT 'rate / best_rate: the four-fifths rule is ratio < 0.8',
    min_window_ratio Nullable(Float64) COMMENT 'Lowest 10-minute ratio of the day the worker computed (fairness_metrics.ratio)'
)
AS SELECT d.day AS day, d.model_id AS model_id, d.attribute AS attribute, d.group_name AS group_name,
       d.decisions AS decisions, d.favorable_n AS favorable, d.rate AS rate,
       max(d.rate) OVER (PARTITION BY d.day, d.model_id, d.attribute) AS best_rate,
       if(best_rate > 0, d.rate / best_rate, NULL) AS ratio, w.min_window_ratio AS min_window_ratio
FROM (
    SELECT toDate(ts) AS day, model_id, kv.1 AS attribute, kv.2 AS group_name,
           count() AS decisions, sum(assumeNotNull(favorable)) AS favorable_n, favorable_n / decisions AS rate
    FROM {{ database }}.telemetry_events FINAL
    ARRAY JOIN arrayZip(mapKeys(segments), mapValues(segments)) AS kv
    WHERE favorable IS NOT NULL
    GROUP BY day, model_id, attribute, group_name
) AS d
LEFT JOIN (
    SELECT toDate(ts) AS day, model_id, attribute, `group` AS group_name, min(ratio) AS min_window_ratio
    FROM {{ database }}.fairness_metrics FINAL
    GROUP BY day, model_id, attribute, group_name
) AS w ON d.day = w.day AND d.model_id = w.model_id AND d.attribute = w.attribute AND d.group_name = w.group_name
COMMENT 'Daily favourable share per model, attribute and group (from the stored events, so within events_ttl_days), and its ratio to the best-treated group';

CREATE VIEW IF NOT EXISTS {{ database }}.incidents_weekly {{ on_cluster }}
(
    week       Date                    COMMENT 'Monday of the UTC week the incidents opened in',
    rule       String                  COMMENT 'Alert rule',
    severity   String                  COMMENT 'Severity',
    incidents  UInt64                  COMMENT 'Incidents opened',
    true_positives UInt64              COMMENT 'Rated true positive by on-call',
    false_positives UInt64             COMMENT 'Rated false positive by on-call',
    unrated    UInt64                  COMMENT 'Not rated',
    precision  Nullable(Float64)       COMMENT 'true / (true + false positives); NULL when none is rated',
    median_minutes_open Nullable(Float64) COMMENT 'Median minutes from opened to resolved (resolved ones)'
)
AS SELECT
    toMonday(opened_at) AS week,
    rule,
    severity,
    count() AS incidents,
    countIf(feedback = 'true_positive') AS true_positives,
    countIf(feedback = 'false_positive') AS false_positives,
    incidents - true_positives - false_positives AS unrated,
    if(true_positives + false_positives > 0, true_positives / (true_positives + false_positives), NULL) AS precision,
    medianIf(dateDiff('second', opened_at, resolved_at) / 60, resolved_at IS NOT NULL) AS median_minutes_open
FROM {{ database }}.incidents FINAL
GROUP BY week, rule, severity
COMMENT 'Incidents per rule and week with their precision from on-call feedback (the incident store mirror)';
