{#- 0010: the evidence threshold rules test (raiwatch.core.records.Signal.evidence_*): one-sided
    bounds, at the model's false-alarm budget, of the quantity evidence_of names; and each
    incident's problem (group_id): incidents of one problem share one page. #}

ALTER TABLE {{ database }}.signals {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS evidence_of LowCardinality(String) DEFAULT ''
        COMMENT 'What evidence_lower/evidence_upper bound: value, ratio (value / baseline) or delta (value - baseline); empty when the signal carries none',
    ADD COLUMN IF NOT EXISTS evidence_lower Nullable(Float64)
        COMMENT 'One-sided lower bound of evidence_of, wrong at most as often as the model''s false-alarm budget allows over a week of windows (what a rule''s ratio.lower etc. reads)',
    ADD COLUMN IF NOT EXISTS evidence_upper Nullable(Float64)
        COMMENT 'One-sided upper bound of evidence_of, as evidence_lower';

ALTER TABLE {{ database }}.incidents {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS group_id Nullable(String)
        COMMENT 'The problem the incident belongs to: the incident_id of its first incident (its own id when it started it); incidents of one problem share one page';

DROP VIEW IF EXISTS {{ database }}.drift_daily {{ on_cluster }};

CREATE VIEW IF NOT EXISTS {{ database }}.drift_daily {{ on_cluster }}
(
    day        Date                    COMMENT 'UTC day of the windows',
    model_id   LowCardinality(String)  COMMENT 'Model',
    kind       String                  COMMENT 'feature or prediction (drift.feature, drift.prediction)',
    feature    String                  COMMENT 'Feature, or the output (score, label) for predictions',
    mean_psi   Float64                 COMMENT 'Mean PSI of the windows against the reference',
    max_psi    Float64                 COMMENT 'Highest window PSI that day',
    drifted_windows UInt64             COMMENT 'Windows whose PSI was above 0.1 with confidence (evidence_lower > 0.1: the FeatureDrift rule''s test)',
    windows    UInt64                  COMMENT 'Windows compared',
    min_p_value Nullable(Float64)      COMMENT 'Smallest (Bonferroni-adjusted) p-value of no difference that day'
)
AS SELECT
    toDate(ts) AS day,
    model_id,
    replaceOne(signal, 'drift.', '') AS kind,
    if(signal = 'drift.feature', dims['feature'], dims['output']) AS feature,
    avg(value) AS mean_psi,
    max(value) AS max_psi,
    countIf(evidence_of = 'value' AND evidence_lower > 0.1) AS drifted_windows,
    count() AS windows,
    min(p_value) AS min_p_value
FROM {{ database }}.signals FINAL
WHERE signal IN ('drift.feature', 'drift.prediction')
GROUP BY day, model_id, kind, feature
COMMENT 'Daily drift score (PSI) per model and feature or output, from the 60 s signals';
