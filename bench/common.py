"""What the bench scripts share: a server to measure on and fresh databases on it."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

import database  # noqa: E402
from settings import Settings, load_settings  # noqa: E402


def bench_settings(prefix: str) -> Settings:
    """DATABASE_URL's server if set, else a throw-away embedded server (its own data directory)."""
    settings = load_settings()
    if settings.database_url:
        return settings
    pg_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-pg-"))
    pg_dir.chmod(0o755)  # the server may run as another user (pgserver, when run as root)
    return Settings(pg_data_dir=pg_dir)


def fresh_database(base_dsn: str, prefix: str) -> str:
    """A new database with the schema, on the same server."""
    return database.create_database(base_dsn, f"{prefix}_{os.getpid()}_{time.time_ns()}")
