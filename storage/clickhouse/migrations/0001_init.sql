{#- 0001: the four documented tables. A Jinja2 template rendered by storage/clickhouse/schema.py
    with database, on_cluster ("" or "ON CLUSTER name"), ttl_days and engine(name, *args), which
    adds the Replicated prefix and Keeper path when a cluster is set. Statements end with a ";"
    at the end of a line; each is idempotent. #}

CREATE TABLE IF NOT EXISTS {{ database }}.telemetry_events {{ on_cluster }}
(
    event_id         String                      COMMENT 'Unique per inference; the idempotency key everywhere downstream',
    ts               DateTime64(3, 'UTC')        COMMENT 'Event time (the event timestamp), in UTC',
    model_id         LowCardinality(String)      COMMENT 'model.id',
    model_version    LowCardinality(String)      COMMENT 'model.version; empty when absent',
    model_kind       LowCardinality(String)      COMMENT 'model.kind: llm, classifier, regressor, ranker, other; empty when absent',
    deployment       LowCardinality(String)      COMMENT 'Environment or region, e.g. prod-eu; empty when absent',
    feature          LowCardinality(String)      COMMENT 'Product surface or use case that called the model; empty when absent',
    tenant_id        LowCardinality(String)      COMMENT 'Tenant; empty when absent',
    user_id          String                      COMMENT 'Pseudonymous account id; empty when absent',
    session_id       String                      COMMENT 'Session id; empty when absent',
    ip_hash          String                      COMMENT 'client.ip_hash; empty when absent',
    request_tokens   Nullable(UInt64)            COMMENT 'request.tokens; NULL when absent',
    response_tokens  Nullable(UInt64)            COMMENT 'response.tokens; NULL when absent',
    latency_ms       Nullable(Float64)           COMMENT 'response.latency_ms; NULL when absent',
    finish_reason    LowCardinality(String)      COMMENT 'response.finish_reason, e.g. stop, length, content_filter; empty when absent',
    error            Nullable(String)            COMMENT 'response.error; NULL when the inference did not fail',
    language         LowCardinality(String)      COMMENT 'request.language; empty when absent',
    prediction_label Nullable(String)            COMMENT 'response.prediction.label of a classifier; NULL when absent',
    prediction_score Nullable(Float64)           COMMENT 'response.prediction.score; NULL when absent',
    safety_scores    Map(LowCardinality(String), Float32) COMMENT 'safety.scores: category -> score in [0, 1]',
    violations       Array(LowCardinality(String)) COMMENT 'safety.violations: categories the policy judged violated',
    safety_action    LowCardinality(String)      COMMENT 'safety.action: allowed, blocked, redacted, escalated; empty when absent',
    segments         Map(LowCardinality(String), String) COMMENT 'Fairness attributes: name -> group; null groups are left out (unknown group)',
    favorable        Nullable(UInt8)             COMMENT 'outcome.favorable as 1 or 0; NULL when absent',
    request_text     Nullable(String)            COMMENT 'Prompt text; NULL unless clickhouse.store_text is on',
    response_text    Nullable(String)            COMMENT 'Response text; NULL unless clickhouse.store_text is on',
    raw              String CODEC(ZSTD(3))       COMMENT 'The original JSON event (unknown fields included), without request.text and response.text unless store_text',
    ingested_at      DateTime64(3, 'UTC')        COMMENT 'When raiwatch wrote the row: the newest copy wins when a replayed event collapses, and the row expires ttl_days after it'
)
ENGINE = {{ engine("ReplacingMergeTree", "ingested_at") }}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (model_id, ts, event_id)
TTL toDateTime(ingested_at) + INTERVAL {{ ttl_days }} DAY
SETTINGS ttl_only_drop_parts = 1
COMMENT 'One row per valid telemetry event (telemetry-event.v1). A replayed event collapses on (model_id, ts, event_id): count with FINAL. Kept {{ ttl_days }} days after it was written (so replays of old history stay queryable).';

CREATE TABLE IF NOT EXISTS {{ database }}.telemetry_events_in {{ on_cluster }}
(
    raw         String               COMMENT 'A valid event as JSON (text already removed unless store_text)',
    ingested_at DateTime64(3, 'UTC') COMMENT 'When raiwatch wrote it'
)
ENGINE = Null
COMMENT 'Ingest point of telemetry_events: raiwatch inserts the raw JSON here and telemetry_events_mv parses it once, in ClickHouse, into the typed columns. Holds no data.';

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.telemetry_events_mv {{ on_cluster }}
TO {{ database }}.telemetry_events AS
SELECT
    j.event_id AS event_id,
    parseDateTime64BestEffort(j.timestamp, 3, 'UTC') AS ts,
    j.model.id AS model_id,
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
    SELECT raw, ingested_at, JSONExtract(raw, 'Tuple(event_id String, timestamp String, model Tuple(id String, version String, kind String), deployment String, feature String, tenant_id String, user_id String, session_id String, client Tuple(ip_hash String), request Tuple(text Nullable(String), tokens Nullable(UInt64), language String), response Tuple(tokens Nullable(UInt64), latency_ms Nullable(Float64), finish_reason String, error Nullable(String), text Nullable(String), prediction Tuple(label Nullable(String), score Nullable(Float64))), safety Tuple(scores Map(String, Float32), violations Array(String), action String), segments Map(String, Nullable(String)), outcome Tuple(favorable Nullable(UInt8)))') AS j
    FROM {{ database }}.telemetry_events_in
)
COMMENT 'Parses each JSON event inserted into telemetry_events_in, once, into the typed columns of telemetry_events.';

CREATE TABLE IF NOT EXISTS {{ database }}.signals {{ on_cluster }}
(
    ts            DateTime64(3, 'UTC')                COMMENT 'End of the event-time window that produced the value',
    window_s      UInt32                              COMMENT 'Window length in seconds',
    signal        LowCardinality(String)              COMMENT 'Signal name, family first, e.g. safety.violation_rate',
    family        LowCardinality(String)              COMMENT 'First dotted part of signal: drift, safety, abuse, fairness, quality, pipeline',
    model_id      LowCardinality(String)              COMMENT 'Model the value is about',
    model_version LowCardinality(String)              COMMENT 'Model version; empty when the value covers every version',
    dims          Map(LowCardinality(String), String) COMMENT 'Further scope, e.g. {category: self_harm, tenant_id: globex}',
    dims_key      String                              COMMENT 'dims as JSON with sorted keys, empty for no dims (in the sorting key, so a re-written signal collapses)',
    value         Float64                             COMMENT 'The measured number',
    baseline      Nullable(Float64)                   COMMENT 'Reference value it is compared with, where one exists',
    lower         Nullable(Float64)                   COMMENT 'Lower bound of the confidence interval of value (95% unless the monitor says otherwise)',
    upper         Nullable(Float64)                   COMMENT 'Upper bound of the confidence interval of value',
    p_value       Nullable(Float64)                   COMMENT 'p-value where a statistical test applies',
    n             UInt64                              COMMENT 'Sample size the value was measured on',
    inserted_at   DateTime64(3, 'UTC')                COMMENT 'When raiwatch wrote the row; the newest copy wins under FINAL'
)
ENGINE = {{ engine("ReplacingMergeTree", "inserted_at") }}
PARTITION BY toYYYYMM(ts)
ORDER BY (signal, model_id, model_version, dims_key, window_s, ts)
COMMENT 'Trend table: one row per signal, scope and window. Query with FINAL so re-written windows count once.';

CREATE TABLE IF NOT EXISTS {{ database }}.incidents {{ on_cluster }}
(
    incident_id     String                              COMMENT 'Incident id',
    dedup_key       String                              COMMENT 'Stable for one rule and one label set',
    rule            LowCardinality(String)              COMMENT 'Alert rule name',
    signal          LowCardinality(String)              COMMENT 'Signal the rule watches, family first',
    severity        LowCardinality(String)              COMMENT 'critical, high, warning or info',
    status          LowCardinality(String)              COMMENT 'open, acknowledged or resolved',
    opened_at       DateTime64(3, 'UTC')                COMMENT 'Event time at which the rule for-duration was met',
    acknowledged_at Nullable(DateTime64(3, 'UTC'))      COMMENT 'When on-call acknowledged it; NULL if not yet',
    resolved_at     Nullable(DateTime64(3, 'UTC'))      COMMENT 'When it resolved; NULL while open',
    labels          Map(LowCardinality(String), String) COMMENT 'Group-by and static labels of the rule; model_id for per-model rules',
    summary         String                              COMMENT 'One sentence with the value, the threshold and the scope',
    runbook_url     String                              COMMENT 'Runbook link',
    value           Nullable(Float64)                   COMMENT 'Signal value when the incident opened',
    threshold       Nullable(Float64)                   COMMENT 'Threshold of the rule',
    feedback        LowCardinality(Nullable(String))    COMMENT 'true_positive or false_positive, set by on-call; NULL if unset',
    updated_at      DateTime64(3, 'UTC')                COMMENT 'Version of the row: the latest copy of an incident wins under FINAL'
)
ENGINE = {{ engine("ReplacingMergeTree", "updated_at") }}
ORDER BY incident_id
COMMENT 'Mirror of the incident store (incident.v1), one row per incident after FINAL.';

CREATE TABLE IF NOT EXISTS {{ database }}.rejected_events {{ on_cluster }}
(
    received_at DateTime64(3, 'UTC') COMMENT 'When raiwatch rejected the input',
    source      String                COMMENT 'Where it came from: file:line in replay, topic/partition@offset on Kafka',
    reason      String                COMMENT 'Why it was rejected, readable by a person',
    raw         String CODEC(ZSTD(3)) COMMENT 'The rejected bytes, as received'
)
ENGINE = {{ engine("MergeTree") }}
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (received_at, source)
TTL toDateTime(received_at) + INTERVAL {{ ttl_days }} DAY
SETTINGS ttl_only_drop_parts = 1
COMMENT 'Inputs that failed decoding or validation: the same records as the dead-letter topic or rejected.jsonl. Kept {{ ttl_days }} days.';
