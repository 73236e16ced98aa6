"""The worker side's commands of ``autopeft``: ``trial``, ``worker``, ``retrain``,
``launch``, ``export`` and ``demo`` (everything that loads torch or trains).

Each module has ``add_parser(subparsers)``, like the server side's in
``autopeft_service.cli``; they are registered as the ``autopeft.commands`` entry points in
pyproject.toml, which ``autopeft_service.cli.main`` discovers. So the server package never
imports this one: the arrow goes from the workers to the command-line framework only.
"""
