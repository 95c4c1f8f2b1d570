"""``python -m stdiff``: the same as the ``stdiff`` command."""
from stdiff.cli import main

raise SystemExit(main())
