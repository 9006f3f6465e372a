{#- 0011: a live worker checkpoints closed windows at most once per kafka.commit_interval_s. #}

ALTER TABLE {{ database }}.checkpoints {{ on_cluster }}
    MODIFY COMMENT 'Where a restarted worker, or the new owner of a partition, continues from: the newest row per (kind, key) counts. Written after the signals of the windows it covers, at most once per kafka.commit_interval_s and when a worker stops or gives up a partition.';
