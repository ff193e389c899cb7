"""Alembic environment for the record store: runs on the connection Store() hands over.

Never creates its own engine when called from Store; standalone use reads ORCONSOLE_DB or -x url=.
"""
from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from logs.tables import metadata

config = context.config
connection = config.attributes.get("connection")


def _run(conn) -> None:
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("ORCONSOLE_DB")
    if not url:
        raise SystemExit("give the database URL with -x url=... or ORCONSOLE_DB")
    with create_engine(url).begin() as conn:
        _run(conn)
