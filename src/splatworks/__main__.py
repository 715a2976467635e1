from splatworks.cli import main

raise SystemExit(main())
