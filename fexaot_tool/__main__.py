from fexaot_tool.cli import main

raise SystemExit(main())
