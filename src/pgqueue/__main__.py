"""``python -m pgqueue``: the ``pgqueue`` command."""

from .cli import main

raise SystemExit(main())
