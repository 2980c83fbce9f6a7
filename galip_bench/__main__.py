from galip_bench.cli import main

raise SystemExit(main())
