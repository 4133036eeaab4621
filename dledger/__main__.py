"""`python -m dledger` runs the same CLI as the `dledger` console script."""

from dledger.cli.main import main

raise SystemExit(main())
