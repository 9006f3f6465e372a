{#- 0012: telemetry_events parts are compact (every column in one file) until they hold 256 MiB
    uncompressed; merged parts past that are wide (a file per column), as before. A wide part of
    this 30-column table is about 50 files, each written and, in a merge, read through a buffer of
    its own: a 200,000-event replay peaked at 959-991 MB of RSS with wide parts and 869-878 MB
    with compact ones, and ended at 848-874 against 723-740 MB (bench/bench_pipeline.py's events;
    VmHWM and VmRSS). ClickHouse's own default is 10 MiB, which a batch of 20,000 events exceeds. #}

ALTER TABLE {{ database }}.telemetry_events {{ on_cluster }}
    MODIFY SETTING min_bytes_for_wide_part = 268435456;
