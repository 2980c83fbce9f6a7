"""Grids: YAML expansion into resolved runs (`grid`), input checks before anything runs (`preflight`), the
`--dry-run` description (`dryrun`), and launching through submitit (`launch`)."""
