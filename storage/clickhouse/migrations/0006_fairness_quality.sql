{#- 0006: group fairness of outcomes, and label-based quality per model and group. #}

CREATE TABLE IF NOT EXISTS {{ database }}.fairness_metrics {{ on_cluster }}
(
    ts              DateTime64(3, 'UTC')     COMMENT 'End of the window the row was computed at',
    model_id        LowCardinality(String)   COMMENT 'Model',
    attribute       LowCardinality(String)   COMMENT 'Segment attribute (age_band, language...), an attribute pair a&b, or tenant_id',
    group           String                   COMMENT 'The group within the attribute; other: groups beyond monitors.fairness.max_groups',
    span_s          UInt32                   COMMENT 'Seconds of events the rates and sizes cover (monitors.fairness.detect_windows windows)',
    n               UInt64                   COMMENT 'The group''s events with a known outcome over span_s',
    favorable       UInt64                   COMMENT 'Of them, favourable',
    rate            Nullable(Float64)        COMMENT 'favorable / n; NULL when n = 0',
    lower           Nullable(Float64)        COMMENT 'Wilson 95% lower bound of rate',
    upper           Nullable(Float64)        COMMENT 'Wilson 95% upper bound of rate',
    reference_group String                   COMMENT 'The best-treated group of the attribute with at least min_group events; empty when none',
    reference_n     UInt64                   COMMENT 'The reference group''s events with a known outcome',
    reference_rate  Nullable(Float64)        COMMENT 'The reference group''s favourable share',
    ratio           Nullable(Float64)        COMMENT 'rate / reference_rate: the demographic-parity ratio (four-fifths rule: < 0.8)',
    difference      Nullable(Float64)        COMMENT 'reference_rate - rate: the demographic-parity difference',
    p_value         Nullable(Float64)        COMMENT 'One-sided two-proportion test (rate below the reference), Bonferroni over the model''s comparisons; NULL when a side is below min_group',
    safety_n        UInt64                   COMMENT 'The group''s events with a safety action over span_s',
    blocked         UInt64                   COMMENT 'Of them, blocked',
    block_rate      Nullable(Float64)        COMMENT 'blocked / safety_n',
    block_lower     Nullable(Float64)        COMMENT 'Wilson 95% lower bound of block_rate',
    block_upper     Nullable(Float64)        COMMENT 'Wilson 95% upper bound of block_rate',
    rest_block_rate Nullable(Float64)        COMMENT 'Blocked share of the model''s other events with this attribute',
    block_p_value   Nullable(Float64)        COMMENT 'One-sided two-proportion test (block_rate above the rest), Bonferroni as p_value',
    redacted        UInt64                   COMMENT 'Of safety_n, redacted',
    redaction_rate  Nullable(Float64)        COMMENT 'redacted / safety_n',
    redaction_p_value Nullable(Float64)      COMMENT 'One-sided test of redaction_rate above the rest, Bonferroni as p_value',
    finish_n        UInt64                   COMMENT 'The group''s events with a response.finish_reason over span_s',
    refused         UInt64                   COMMENT 'Of them, refused (finish_reason in monitors.fairness.refusal_reasons)',
    refusal_rate    Nullable(Float64)        COMMENT 'refused / finish_n',
    refusal_p_value Nullable(Float64)        COMMENT 'One-sided test of refusal_rate above the rest, Bonferroni as p_value',
    hour_n          UInt64                   COMMENT 'The group''s events with a known outcome over monitors.fairness.horizon_windows',
    hour_rate       Nullable(Float64)        COMMENT 'Their favourable share'
)
ENGINE = {{ engine("ReplacingMergeTree") }}
PARTITION BY toYYYYMM(ts)
ORDER BY (model_id, attribute, group, ts)
TTL toDateTime(ts) + INTERVAL {{ ttl_days }} DAY
SETTINGS ttl_only_drop_parts = 1
COMMENT 'Favourable-outcome, block, redaction and refusal rates per model, attribute and group at every window close, with both sides'' sizes (fairness monitor). Kept {{ ttl_days }} days.';

CREATE TABLE IF NOT EXISTS {{ database }}.quality_metrics {{ on_cluster }}
(
    ts                  DateTime64(3, 'UTC')     COMMENT 'End of the window the row was computed at',
    model_id            LowCardinality(String)   COMMENT 'Model',
    attribute           LowCardinality(String)   COMMENT 'Segment attribute; empty for the model-wide row',
    group               String                   COMMENT 'The group; empty for the model-wide row',
    span_s              UInt32                   COMMENT 'Seconds of label arrivals the counts cover (detect_windows model-wide, group_windows per group)',
    labels              UInt64                   COMMENT 'Labels joined to an inference over span_s (counted when they arrived)',
    known               UInt64                   COMMENT 'Of them, labels whose right/wrong is known (a class or a favourable flag to compare)',
    correct             UInt64                   COMMENT 'Of them, predictions that were right',
    accuracy            Nullable(Float64)        COMMENT 'correct / known',
    positives           UInt64                   COMMENT 'Labels whose true outcome was favourable (prediction''s outcome known)',
    true_positives      UInt64                   COMMENT 'Of them, predicted favourable',
    negatives           UInt64                   COMMENT 'Labels whose true outcome was unfavourable (prediction''s outcome known)',
    false_positives     UInt64                   COMMENT 'Of them, predicted favourable',
    precision           Nullable(Float64)        COMMENT 'true_positives / (true_positives + false_positives)',
    recall              Nullable(Float64)        COMMENT 'true_positives / positives: the true-positive rate (equal opportunity per group)',
    false_positive_rate Nullable(Float64)        COMMENT 'false_positives / negatives',
    calibration_error   Nullable(Float64)        COMMENT 'Model-wide rows: expected calibration error over monitors.quality.horizon_windows; NULL per group',
    pending             Nullable(UInt64)         COMMENT 'Model-wide rows: inferences still waiting for a label; NULL per group'
)
ENGINE = {{ engine("ReplacingMergeTree") }}
PARTITION BY toYYYYMM(ts)
ORDER BY (model_id, attribute, group, ts)
TTL toDateTime(ts) + INTERVAL {{ ttl_days }} DAY
SETTINGS ttl_only_drop_parts = 1
COMMENT 'Label-based quality per model (attribute = '''') and per group, at every window close that had labels in range (quality monitor). Kept {{ ttl_days }} days.';
