{#- 0003: delayed ground truth (feedback-event.v1), stored as it arrives, for analysts and for the
    monitors that join it to inferences. #}

CREATE TABLE IF NOT EXISTS {{ database }}.feedback_events {{ on_cluster }}
(
    event_id    String                   COMMENT 'The inference this label is about (telemetry_events.event_id)',
    ts          DateTime64(3, 'UTC')     COMMENT 'When the ground truth became known (the feedback timestamp)',
    label       Nullable(String)         COMMENT 'The true label; NULL when not given',
    favorable   Nullable(UInt8)          COMMENT 'Whether the true outcome was the favourable one (1 or 0); NULL when not given',
    value       Nullable(Float64)        COMMENT 'A numeric ground truth (regression); NULL when not given',
    source      LowCardinality(String)   COMMENT 'Where the label came from, e.g. chargeback, human_review; empty when absent',
    raw         String CODEC(ZSTD(3))    COMMENT 'The original JSON, unknown fields included',
    ingested_at DateTime64(3, 'UTC')     COMMENT 'When raiwatch wrote the row: the newest copy of a redelivered label wins'
)
ENGINE = {{ engine("ReplacingMergeTree", "ingested_at") }}
PARTITION BY toYYYYMM(ts)
ORDER BY (event_id, ts)
TTL toDateTime(ingested_at) + INTERVAL {{ ttl_days }} DAY
SETTINGS ttl_only_drop_parts = 1
COMMENT 'One row per valid feedback event (feedback-event.v1), joined to telemetry_events by event_id. Two labels for one inference at different times are two rows. Kept {{ ttl_days }} days after written.';
