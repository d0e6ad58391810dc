from reangle.cli.main import main

raise SystemExit(main())
