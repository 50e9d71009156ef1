"""``python -m dispatcher`` is the ``dispatcher`` command."""

from dispatcher.cli.main import main

raise SystemExit(main())
