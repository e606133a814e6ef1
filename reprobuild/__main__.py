from reprobuild.cli import main

raise SystemExit(main())
