{#- 0008: rollups of signals and event counts, 1 min -> 1 h -> 1 day, in AggregatingMergeTree.
    raiwatch inserts each stored row into the 1-minute level exactly once, from the FINAL (deduplicated)
    table, when its window has closed (storage/clickhouse/rollups.py); materialized views carry each
    insert on to the hour and the day. A materialized view fed by the raw inserts instead would count
    a re-read event or a re-written window twice. #}

{%- macro signal_columns(bucket, bucket_comment) %}
(
    {{ bucket }}  DateTime('UTC')                     COMMENT '{{ bucket_comment }}',
    model_id      LowCardinality(String)              COMMENT 'Model the signal is about',
    signal        LowCardinality(String)              COMMENT 'Signal name, family first, e.g. safety.violation_rate',
    family        SimpleAggregateFunction(any, String) COMMENT 'First dotted part of signal',
    model_version LowCardinality(String)              COMMENT 'Model version; empty when the value covers every version',
    dims_key      String                              COMMENT 'dims as JSON with sorted keys (the scope, in the sorting key)',
    window_s      UInt32                              COMMENT 'Window length in seconds of the rolled-up windows',
    dims          SimpleAggregateFunction(any, Map(String, String)) COMMENT 'Further scope, e.g. {category: self_harm} (dims_key as a map)',
    windows       SimpleAggregateFunction(sum, UInt64)  COMMENT 'Windows rolled up',
    n             SimpleAggregateFunction(sum, UInt64)  COMMENT 'Sum of the windows'' sample sizes',
    value_sum     SimpleAggregateFunction(sum, Float64) COMMENT 'Sum of the window values: value_sum / windows is the mean window value',
    value_n_sum   SimpleAggregateFunction(sum, Float64) COMMENT 'Sum of value * n: value_n_sum / n is the pooled value (for a rate, violations / events)',
    value_min     SimpleAggregateFunction(min, Float64) COMMENT 'Lowest window value',
    value_max     SimpleAggregateFunction(max, Float64) COMMENT 'Highest window value',
    p_value_min   SimpleAggregateFunction(min, Nullable(Float64)) COMMENT 'Smallest window p-value; NULL when the signal has none',
    rolled_to     SimpleAggregateFunction(max, DateTime64(3, 'UTC')) COMMENT 'Event time up to which raiwatch had rolled up the model when it wrote the row (its cursor)',
    rolled_at     SimpleAggregateFunction(max, DateTime('UTC')) COMMENT 'Wall time of the newest roll-up into the row'
)
{%- endmacro %}

{%- macro event_columns(bucket, bucket_comment) %}
(
    {{ bucket }}   DateTime('UTC')                      COMMENT '{{ bucket_comment }}',
    model_id       LowCardinality(String)               COMMENT 'model.id',
    model_version  LowCardinality(String)               COMMENT 'model.version; empty when absent',
    deployment     LowCardinality(String)               COMMENT 'Environment or region; empty when absent',
    feature        LowCardinality(String)               COMMENT 'Product surface that called the model; empty when absent',
    events         SimpleAggregateFunction(sum, UInt64) COMMENT 'Events',
    errors         SimpleAggregateFunction(sum, UInt64) COMMENT 'Events whose response.error is set',
    violating      SimpleAggregateFunction(sum, UInt64) COMMENT 'Events with at least one safety violation',
    blocked        SimpleAggregateFunction(sum, UInt64) COMMENT 'Events with safety.action = blocked',
    decisions      SimpleAggregateFunction(sum, UInt64) COMMENT 'Events with outcome.favorable',
    favorable      SimpleAggregateFunction(sum, UInt64) COMMENT 'Events with outcome.favorable = true',
    request_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'Sum of request.tokens (absent counts 0)',
    response_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'Sum of response.tokens (absent counts 0)',
    latency_n      SimpleAggregateFunction(sum, UInt64) COMMENT 'Events with response.latency_ms',
    latency_ms_sum SimpleAggregateFunction(sum, Float64) COMMENT 'Sum of response.latency_ms: latency_ms_sum / latency_n is the mean',
    latency_ms_max SimpleAggregateFunction(max, Float64) COMMENT 'Highest response.latency_ms (0 when none)',
    latency_ms_q   AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64) COMMENT 'Latency p50, p95, p99 (t-digest, approximate): quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms_q)',
    users          AggregateFunction(uniqCombined, String) COMMENT 'Distinct non-empty user_id (HyperLogLog, within about 1%): uniqCombinedMerge(users)',
    rolled_to      SimpleAggregateFunction(max, DateTime64(3, 'UTC')) COMMENT 'Event time up to which raiwatch had rolled up the model when it wrote the row (its cursor)',
    rolled_at      SimpleAggregateFunction(max, DateTime('UTC')) COMMENT 'Wall time of the newest roll-up into the row'
)
{%- endmacro %}

{%- macro signal_merge(bucket_expr, bucket, source) %}
SELECT {{ bucket_expr }}, model_id, signal, any(family) AS family, model_version, dims_key, window_s,
       any(dims) AS dims, sum(windows) AS windows, sum(n) AS n, sum(value_sum) AS value_sum,
       sum(value_n_sum) AS value_n_sum, min(value_min) AS value_min, max(value_max) AS value_max,
       min(p_value_min) AS p_value_min, max(rolled_to) AS rolled_to, max(rolled_at) AS rolled_at
FROM {{ database }}.{{ source }}
GROUP BY {{ bucket }}, model_id, signal, model_version, dims_key, window_s
{%- endmacro %}

{%- macro event_merge(bucket_expr, bucket, source) %}
SELECT {{ bucket_expr }}, model_id, model_version, deployment, feature,
       sum(events) AS events, sum(errors) AS errors, sum(violating) AS violating, sum(blocked) AS blocked,
       sum(decisions) AS decisions, sum(favorable) AS favorable, sum(request_tokens) AS request_tokens,
       sum(response_tokens) AS response_tokens, sum(latency_n) AS latency_n, sum(latency_ms_sum) AS latency_ms_sum,
       max(latency_ms_max) AS latency_ms_max, quantilesTDigestMergeState(0.5, 0.95, 0.99)(latency_ms_q) AS latency_ms_q,
       uniqCombinedMergeState(users) AS users, max(rolled_to) AS rolled_to, max(rolled_at) AS rolled_at
FROM {{ database }}.{{ source }}
GROUP BY {{ bucket }}, model_id, model_version, deployment, feature
{%- endmacro %}

CREATE TABLE IF NOT EXISTS {{ database }}.signals_1m {{ on_cluster }}
{{ signal_columns("minute", "Start of the UTC minute in which the window started (ts - window_s)") }}
ENGINE = {{ engine("AggregatingMergeTree") }}
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_id, signal, model_version, dims_key, window_s, minute)
TTL rolled_at + INTERVAL {{ ttl_days }} DAY
COMMENT 'Signals per minute: each window of signals FINAL added once, when it closed. Aggregate with sum/min/max (GROUP BY the key, or FINAL). Kept {{ ttl_days }} days after it was written; signals_1h and signals_1d are kept.';

CREATE TABLE IF NOT EXISTS {{ database }}.signals_1h {{ on_cluster }}
{{ signal_columns("hour", "Start of the UTC hour in which the window started") }}
ENGINE = {{ engine("AggregatingMergeTree") }}
PARTITION BY toYYYYMM(hour)
ORDER BY (model_id, signal, model_version, dims_key, window_s, hour)
COMMENT 'Signals per hour, from signals_1m by signals_1h_mv. Aggregate with sum/min/max (GROUP BY the key, or FINAL).';

CREATE TABLE IF NOT EXISTS {{ database }}.signals_1d {{ on_cluster }}
{{ signal_columns("day", "UTC day in which the window started (as a DateTime at 00:00)") }}
ENGINE = {{ engine("AggregatingMergeTree") }}
PARTITION BY toYear(day)
ORDER BY (model_id, signal, model_version, dims_key, window_s, day)
COMMENT 'Signals per day, from signals_1h by signals_1d_mv. Aggregate with sum/min/max (GROUP BY the key, or FINAL).';

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.signals_1h_mv {{ on_cluster }}
TO {{ database }}.signals_1h AS
{{ signal_merge("toStartOfHour(minute) AS hour", "hour", "signals_1m") }}
COMMENT 'Carries each insert into signals_1m on to signals_1h.';

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.signals_1d_mv {{ on_cluster }}
TO {{ database }}.signals_1d AS
{{ signal_merge("toStartOfDay(hour) AS day", "day", "signals_1h") }}
COMMENT 'Carries each insert into signals_1h on to signals_1d.';

CREATE TABLE IF NOT EXISTS {{ database }}.events_1m {{ on_cluster }}
{{ event_columns("minute", "Start of the UTC minute of the event timestamps") }}
ENGINE = {{ engine("AggregatingMergeTree") }}
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_id, model_version, deployment, feature, minute)
TTL rolled_at + INTERVAL {{ ttl_days }} DAY
COMMENT 'Event counts per minute: each event of telemetry_events FINAL added once, when its window closed (late events are not). Aggregate with sum/max and the -Merge functions (GROUP BY the key). Kept {{ ttl_days }} days after it was written; events_1h and events_1d are kept.';

CREATE TABLE IF NOT EXISTS {{ database }}.events_1h {{ on_cluster }}
{{ event_columns("hour", "Start of the UTC hour of the event timestamps") }}
ENGINE = {{ engine("AggregatingMergeTree") }}
PARTITION BY toYYYYMM(hour)
ORDER BY (model_id, model_version, deployment, feature, hour)
COMMENT 'Event counts per hour, from events_1m by events_1h_mv. Aggregate with sum/max and the -Merge functions (GROUP BY the key).';

CREATE TABLE IF NOT EXISTS {{ database }}.events_1d {{ on_cluster }}
{{ event_columns("day", "UTC day of the event timestamps (as a DateTime at 00:00)") }}
ENGINE = {{ engine("AggregatingMergeTree") }}
PARTITION BY toYear(day)
ORDER BY (model_id, model_version, deployment, feature, day)
COMMENT 'Event counts per day, from events_1h by events_1d_mv. Aggregate with sum/max and the -Merge functions (GROUP BY the key).';

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.events_1h_mv {{ on_cluster }}
TO {{ database }}.events_1h AS
{{ event_merge("toStartOfHour(minute) AS hour", "hour", "events_1m") }}
COMMENT 'Carries each insert into events_1m on to events_1h.';

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.events_1d_mv {{ on_cluster }}
TO {{ database }}.events_1d AS
{{ event_merge("toStartOfDay(hour) AS day", "day", "events_1h") }}
COMMENT 'Carries each insert into events_1h on to events_1d.';
