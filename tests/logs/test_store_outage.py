"""The store through a real PostgreSQL outage: while the server is stopped every operation raises
StoreUnavailable (a StoreError naming the store and what to do) and the health check fails; once the server is
back the SAME Store answers again (the pool drops its dead connections), with nothing lost or doubled."""
from __future__ import annotations

import os
import shutil

import pytest

from logs.store import Store, StoreError, StoreUnavailable
from tests.pg import PostgresUnavailable, TemporaryPostgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_cluster():
    """A cluster of its own: stopping the session's shared cluster would break the other store tests."""
    try:
        pg = TemporaryPostgres().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and could not be started: {exc}")
        pytest.skip(f"PostgreSQL not available ({exc})")
    yield pg
    if pg.is_running():
        pg.stop()
    else:
        shutil.rmtree(pg.tmp, ignore_errors=True)


def test_the_store_is_unavailable_while_postgres_is_stopped_and_answers_again_once_it_is_back(own_cluster):
    store = Store(own_cluster.create_database("outage"))
    try:
        store.audit("tom", "before the outage")
        assert store.healthcheck().ok
        own_cluster.stop_server()
        health = store.healthcheck()
        assert not health.ok and "record store" in health.reason
        with pytest.raises(StoreUnavailable) as info:       # a pooled connection whose server went away
            store.audit("tom", "during the outage")
        assert isinstance(info.value, StoreError)
        assert "is unavailable" in info.value.message and "Restore the database server" in info.value.message
        with pytest.raises(StoreUnavailable):
            store.get_user(username="tom")
        own_cluster.start_server()
        assert store.healthcheck().ok
        store.audit("tom", "after the outage")
        actions = [e.action for e in store.audit_entries()]
        assert actions.count("before the outage") == 1 and actions.count("after the outage") == 1
        assert "during the outage" not in actions
        assert store.verify_audit_chain().ok
    finally:
        store.close()
