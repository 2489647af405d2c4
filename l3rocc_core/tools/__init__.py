"""The ``l3rocc`` subcommands, one module each (``add_arguments(parser)``, ``run(args) -> int``)."""
