from onemap.cli import main

raise SystemExit(main())
