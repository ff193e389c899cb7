"""Sub-commands of the `orconsole` command line; each module exposes register(subparsers)."""
