"""What the stages share: argv parsing and the result JSON, Triton and
perf_analyzer helpers, telemetry, distributed load, statistics. A stage entry
point (mnist_jobs.<stage>) imports from here, never from another stage."""
