"""Benchmarks behind ``msadtalker bench KIND``: one module per kind (``DESCRIPTION``,
``add_arguments(parser)``, ``run(args) -> dict``)."""
