{#- 0005: clusters of near-duplicate prompts the abuse monitor reported, and their members. #}

CREATE TABLE IF NOT EXISTS {{ database }}.abuse_clusters {{ on_cluster }}
(
    model_id        LowCardinality(String)   COMMENT 'Model the prompts were sent to',
    cluster_id      String                   COMMENT 'Cluster id (abuse.campaign dim cluster): c- and a digest of its first prompt',
    mode            LowCardinality(String)   COMMENT 'near: near-duplicate text (MinHash/LSH on word sets); exact: prompts came as digests, exact repeats only',
    first_seen      DateTime64(3, 'UTC')     COMMENT 'Start of the window the cluster''s first prompt fell in',
    last_seen       DateTime64(3, 'UTC')     COMMENT 'End of the latest window with a prompt of the cluster',
    prompts_total   UInt64                   COMMENT 'Prompts in the cluster since it was first seen',
    prompts         UInt64                   COMMENT 'Prompts over the horizon (monitors.abuse.horizon_s) ending at last_seen',
    accounts        UInt32                   COMMENT 'Distinct accounts over the horizon',
    new_accounts    UInt32                   COMMENT 'Distinct accounts over the horizon first seen by the model less than new_account_s before',
    ip_hashes       UInt32                   COMMENT 'Distinct client.ip_hash over the horizon',
    tenants         Array(String)            COMMENT 'Tenants the prompts came through over the horizon',
    violation_share Float64                  COMMENT 'Share of the horizon''s prompts flagged by the safety classifier',
    growth          Float64                  COMMENT 'Prompts in the latest window over the mean per window of the rest of the horizon (0 when the cluster is new)',
    sample          String                   COMMENT 'A representative prompt: redacted (emails, long digit runs, URLs) and truncated to monitors.abuse.sample_chars; empty when 0',
    top_accounts    Array(String)            COMMENT 'The accounts with the most prompts over the horizon, up to 10',
    updated_at      DateTime64(3, 'UTC')     COMMENT 'Event time of this version: the newest wins under FINAL'
)
ENGINE = {{ engine("ReplacingMergeTree", "updated_at") }}
PARTITION BY toYYYYMM(first_seen)
ORDER BY (model_id, cluster_id)
COMMENT 'One row per cluster of near-duplicate prompts the abuse monitor reported as a possible campaign (abuse.campaign); the latest version under FINAL.';

CREATE TABLE IF NOT EXISTS {{ database }}.abuse_cluster_members {{ on_cluster }}
(
    model_id   LowCardinality(String)   COMMENT 'Model the prompt was sent to',
    cluster_id String                   COMMENT 'abuse_clusters.cluster_id',
    event_id   String                   COMMENT 'The prompt''s event (telemetry_events.event_id)',
    window_end DateTime64(3, 'UTC')     COMMENT 'End of the window the event fell in',
    user_id    String                   COMMENT 'The account that sent it (empty when the event had none)',
    ip_hash    String                   COMMENT 'client.ip_hash (empty when absent)',
    tenant_id  String                   COMMENT 'Tenant (empty when absent)',
    flagged    UInt8                    COMMENT '1 when the safety classifier flagged the prompt'
)
ENGINE = {{ engine("ReplacingMergeTree") }}
PARTITION BY toYYYYMM(window_end)
ORDER BY (model_id, cluster_id, event_id)
COMMENT 'The prompts of each reported cluster over its horizon, for drill-down: join telemetry_events on event_id.';
