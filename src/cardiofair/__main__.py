from cardiofair.cli import main

raise SystemExit(main())
