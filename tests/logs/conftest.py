"""Fixtures for the record-store tests: a store on SQLite and on a real PostgreSQL cluster.

The PostgreSQL cluster is started once per test session (tests/pg.py). Without initdb the postgres
tests skip locally, but FAIL when the CI environment variable is set: CI must run them.
"""
from __future__ import annotations

import itertools
import os

import pytest

from tests.pg import APT_HINT, PostgresUnavailable, TemporaryPostgres

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_cluster():
    try:
        pg = TemporaryPostgres().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and could not be started: {exc}")
        pytest.skip(f"PostgreSQL not available ({exc}). Install it: {APT_HINT}")
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.sqlite3'}"
    cluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture
def store(store_url):
    from logs.store import Store

    s = Store(store_url)
    yield s
    s.close()


def drop_protection(store) -> None:
    """Remove the append-only/immutability triggers, as an attacker with database access could,
    so that tests can tamper with rows and check that verification still catches it."""
    from sqlalchemy import text

    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            names = [r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'"))]
            for n in names:
                conn.execute(text(f"DROP TRIGGER {n}"))
        else:
            for table in ("audit_log", "signatures", "public_keys", "documents"):
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
