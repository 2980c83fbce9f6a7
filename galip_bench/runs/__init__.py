"""Run folders (`rundir`), who owns one (`lock`), `run --force`'s replacement of old results (`replace`), whether
their jobs are alive (`liveness`), and grid-level tables rebuilt from them (`results`)."""
