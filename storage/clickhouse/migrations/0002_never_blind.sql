{#- 0002: the identity of a stored event comes from what raiwatch validated, not from a second parse;
    rejected inputs carry their size and hash; checkpoints let a restarted worker continue exactly. #}

ALTER TABLE {{ database }}.telemetry_events_in {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS event_id String COMMENT 'event_id as raiwatch validated it' FIRST,
    ADD COLUMN IF NOT EXISTS ts DateTime64(3, 'UTC') COMMENT 'Event time as raiwatch validated it' AFTER event_id,
    ADD COLUMN IF NOT EXISTS model_id String COMMENT 'model.id as raiwatch validated it' AFTER ts;

ALTER TABLE {{ database }}.telemetry_events_in {{ on_cluster }}
    MODIFY COMMENT 'Ingest point of telemetry_events: raiwatch inserts each valid event here (its validated event_id, ts and model_id, and its raw JSON) and telemetry_events_mv parses the rest once, in ClickHouse, into the typed columns. Holds no data.';

DROP VIEW IF EXISTS {{ database }}.telemetry_events_mv {{ on_cluster }};

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.telemetry_events_mv {{ on_cluster }}
TO {{ database }}.telemetry_events AS
SELECT
    event_id,
    ts,
    model_id,
    j.model.version AS model_version,
    j.model.kind AS model_kind,
    j.deployment AS deployment,
    j.feature AS feature,
    j.tenant_id AS tenant_id,
    j.user_id AS user_id,
    j.session_id AS session_id,
    j.client.ip_hash AS ip_hash,
    j.request.tokens AS request_tokens,
    j.response.tokens AS response_tokens,
    j.response.latency_ms AS latency_ms,
    j.response.finish_reason AS finish_reason,
    j.response.error AS error,
    j.request.language AS language,
    j.response.prediction.label AS prediction_label,
    j.response.prediction.score AS prediction_score,
    j.safety.scores AS safety_scores,
    j.safety.violations AS violations,
    j.safety.action AS safety_action,
    mapFilter((k, v) -> v IS NOT NULL, j.segments) AS segments,
    j.outcome.favorable AS favorable,
    j.request.text AS request_text,
    j.response.text AS response_text,
    raw,
    ingested_at
FROM
(
    SELECT event_id, ts, model_id, raw, ingested_at, JSONExtract(raw, 'Tuple(model Tuple(version String, kind String), deployment String, feature String, tenant_id String, user_id String, session_id String, client Tuple(ip_hash String), request Tuple(text Nullable(String), tokens Nullable(UInt64), language String), response Tuple(tokens Nullable(UInt64), latency_ms Nullable(Float64), finish_reason String, error Nullable(String), text Nullable(String), prediction Tuple(label Nullable(String), score Nullable(Float64))), safety Tuple(scores Map(String, Float32), violations Array(String), action String), segments Map(String, Nullable(String)), outcome Tuple(favorable Nullable(UInt8)))') AS j
    FROM {{ database }}.telemetry_events_in
)
COMMENT 'Parses each JSON event inserted into telemetry_events_in, once, into the typed columns of telemetry_events; event_id, ts and model_id come as validated by raiwatch.';

ALTER TABLE {{ database }}.rejected_events {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS size UInt64 COMMENT 'Length of the rejected input in bytes' AFTER reason,
    ADD COLUMN IF NOT EXISTS sha256 String COMMENT 'SHA-256 of the rejected input (hex): finds it again, e.g. from a truncated dead-letter copy' AFTER size;

CREATE TABLE IF NOT EXISTS {{ database }}.checkpoints {{ on_cluster }}
(
    kind       LowCardinality(String) COMMENT 'clock: the event-time position of one input partition; otherwise the monitor family whose state this is',
    key        String                 COMMENT 'The partition (kind clock) or the model_id (a monitor state)',
    until      DateTime64(3, 'UTC')   COMMENT 'Every window ending at or before this was closed and its results written when the row was written',
    state      String                 COMMENT 'The monitor state (msgpack), empty for clock rows',
    written_at DateTime64(3, 'UTC')   COMMENT 'When raiwatch wrote the row'
)
ENGINE = {{ engine("ReplacingMergeTree", "until") }}
ORDER BY (kind, key)
COMMENT 'Where a restarted worker, or the new owner of a partition, continues from: the newest row per (kind, key) counts. Written with the signals of each closed window.';
