"""Run folders (`rundir`), whether their jobs are alive (`liveness`), and grid-level tables rebuilt from them
(`results`)."""
