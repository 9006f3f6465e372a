{#- 0009: fairness_metrics and quality_metrics expired ttl_days after their window's event time (ts),
    so a replay or backfill of history older than ttl_days lost both tables at once. Like every other
    table with a TTL, they now count from when the row was stored: a new column written_at.
    Rows stored before this migration get their ts as written_at (the expiry they already had; the
    time they were stored is not known), materialized before the default becomes now64(3), so that
    the value is deterministic on every replica and stays put. #}

{%- for table in ("fairness_metrics", "quality_metrics") %}

ALTER TABLE {{ database }}.{{ table }} {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS written_at DateTime64(3, 'UTC') DEFAULT ts
    COMMENT 'When the row was stored (the ClickHouse clock at insert); it expires ttl_days after this';

ALTER TABLE {{ database }}.{{ table }} {{ on_cluster }}
    MATERIALIZE COLUMN written_at SETTINGS mutations_sync = 2;

ALTER TABLE {{ database }}.{{ table }} {{ on_cluster }}
    MODIFY COLUMN written_at DEFAULT now64(3);

ALTER TABLE {{ database }}.{{ table }} {{ on_cluster }}
    MODIFY TTL toDateTime(written_at) + INTERVAL {{ ttl_days }} DAY;
{%- endfor %}

ALTER TABLE {{ database }}.fairness_metrics {{ on_cluster }}
    MODIFY COMMENT 'Favourable-outcome, block, redaction and refusal rates per model, attribute and group at every window close, with both sides'' sizes (fairness monitor). Kept {{ ttl_days }} days after it was written (so replays of old history stay queryable).';

ALTER TABLE {{ database }}.quality_metrics {{ on_cluster }}
    MODIFY COMMENT 'Label-based quality per model (attribute = '''') and per group, at every window close that had labels in range (quality monitor). Kept {{ ttl_days }} days after it was written (so replays of old history stay queryable).';
