"""One module per ``stdiff`` sub-command, each with ``HELP``, ``build(parser)`` and ``run(args) -> int``."""
