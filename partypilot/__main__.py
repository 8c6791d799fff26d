from partypilot.cli import main

raise SystemExit(main())
