from matchrepro.cli import main

raise SystemExit(main())
