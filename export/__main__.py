"""`python -m export`: the DVC export stage (see export.stage)."""

from export.stage import main

raise SystemExit(main())
