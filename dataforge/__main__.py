from dataforge.cli import main

raise SystemExit(main())
