"""``python -m runner`` is the ``raybatch`` command."""

from .cli import main

raise SystemExit(main())
