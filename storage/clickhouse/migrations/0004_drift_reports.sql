{#- 0004: Evidently drift reports a worker wrote (when a drift incident opened, and on a schedule). #}

CREATE TABLE IF NOT EXISTS {{ database }}.drift_reports {{ on_cluster }}
(
    created_at      DateTime64(3, 'UTC')     COMMENT 'When the report was written (wall clock)',
    model_id        LowCardinality(String)   COMMENT 'Model the report is about',
    reference       String                   COMMENT 'Reference id the current events were compared with (drift signals'' reference dim)',
    trigger         LowCardinality(String)   COMMENT 'incident: a drift incident opened; schedule: monitors.drift.report_every_s came round; manual: raiwatch incidents report',
    incident_id     String                   COMMENT 'The drift incident that asked for it; empty for a scheduled report',
    current_from    DateTime64(3, 'UTC')     COMMENT 'Start of the event-time span the current sample was drawn from',
    current_to      DateTime64(3, 'UTC')     COMMENT 'End of that span (exclusive)',
    reference_rows  UInt32                   COMMENT 'Reference events in the report (a sample by event-id hash)',
    current_rows    UInt32                   COMMENT 'Current events in the report (a sample by event-id hash)',
    columns         UInt16                   COMMENT 'Columns Evidently compared',
    drifted         UInt16                   COMMENT 'Columns Evidently found drifted (its per-column tests at their defaults)',
    drifted_columns Array(String)            COMMENT 'Names of the drifted columns',
    path            String                   COMMENT 'The HTML report on the worker''s disk (DATA_DIR/reports/)'
)
ENGINE = {{ engine("MergeTree") }}
PARTITION BY toYYYYMM(created_at)
ORDER BY (model_id, created_at)
COMMENT 'One row per Evidently drift report a worker wrote; the HTML is at path.';
