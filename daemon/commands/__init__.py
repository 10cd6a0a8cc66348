"""One module per ``adaptd`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
