"""The ``l3rocc`` subcommands: one module each, with ``add_arguments`` and ``run``."""
