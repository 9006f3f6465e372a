{#- 0013: telemetry_events parts merged past 32 MiB uncompressed are wide and merged vertically
    (the sort key first, then each other column on its own, in blocks of 2,048 rows), so a merge
    holds about one column's block, not every column of the part it writes. A horizontal merge
    into a compact part (0012's threshold, 256 MiB) held about the part's whole uncompressed size:
    136 MB to merge six 20,000-event parts (100 MB uncompressed), and MemoryTracking stood at
    124-128 MiB during each large merge over 1.2 million events, 9-15 MiB with vertical merges.
    Inserts (20,000 events, about 17 MB) stay compact, as 0012 meant. #}

ALTER TABLE {{ database }}.telemetry_events {{ on_cluster }}
    MODIFY SETTING min_bytes_for_wide_part = 33554432,
                   vertical_merge_algorithm_min_rows_to_activate = 1,
                   merge_max_block_size = 2048;
