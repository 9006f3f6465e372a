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
