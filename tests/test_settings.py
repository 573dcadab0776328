"""Settings: defaults, parsing, and one clear line + exit code 2 for a bad value."""
from __future__ import annotations

import subprocess
import sys

import pytest

from settings import DEFAULT_SYMBOLS, SettingsError, load_settings
from tests.conftest import PROJECT_DIR


def test_defaults():
    settings = load_settings({})
    assert settings.symbols == DEFAULT_SYMBOLS
    assert (settings.batch_rows, settings.batch_seconds) == (100, 2.0)
    assert (settings.dash_host, settings.dash_port) == ("127.0.0.1", 8050)
    assert settings.database_url is None and settings.binance_ws_url == "wss://stream.binance.com:9443"


def test_values_are_parsed():
    settings = load_settings({"SYMBOLS": " btcusdt, ETHusdt ,btcusdt", "BATCH_SECONDS": "0.5",
                              "BINANCE_WS_URL": "wss://data-stream.binance.vision/", "DATABASE_URL": ""})
    assert settings.symbols == ("BTCUSDT", "ETHUSDT")
    assert settings.batch_seconds == 0.5
    assert settings.binance_ws_url == "wss://data-stream.binance.vision"


@pytest.mark.parametrize("name,value", [
    ("BATCH_ROWS", "0"), ("BATCH_ROWS", "ten"), ("BATCH_SECONDS", "-1"), ("BATCH_SECONDS", "nan"),
    ("DASH_PORT", "70000"), ("SYMBOLS", "btc-usdt"), ("SYMBOLS", ","), ("BINANCE_WS_URL", "http://x"),
    ("BINANCE_REST_URL", "ftp://x"), ("DATABASE_URL", "mysql://x"), ("LOG_LEVEL", "loud"),
    ("DASH_HOST", "0.0.0.0; rm -rf /"), ("ALERT_WEBHOOK_SECRET", "short"), ("ALERT_WEBHOOK_ATTEMPTS", "0"),
    ("ALERT_WEBHOOK_TIMEOUT_SECONDS", "inf"),
])
def test_bad_values_name_the_setting(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_webhook_secret_is_never_shown():
    settings = load_settings({"ALERT_WEBHOOK_SECRET": "0123456789abcdef-secret"})
    assert settings.alert_webhook_secret == "0123456789abcdef-secret" and "secret" not in repr(settings)
    with pytest.raises(SettingsError) as refused:
        load_settings({"ALERT_WEBHOOK_SECRET": "tooshort"})
    assert "tooshort" not in str(refused.value)


@pytest.mark.parametrize("program", ["main.py", "run_all.py"])
def test_programs_exit_2_with_one_line_and_no_traceback(program, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "BATCH_ROWS": "-5", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, program], cwd=PROJECT_DIR, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["bad setting: BATCH_ROWS='-5': must be a positive whole number"]
    assert "Traceback" not in result.stderr


def test_env_example_documents_every_setting_with_its_default():
    from dotenv import dotenv_values

    from settings import _PARSERS

    documented = dotenv_values(PROJECT_DIR / ".env.example")
    assert set(_PARSERS) - {"DEMO"} <= set(documented)
    assert load_settings({k: v for k, v in documented.items() if v is not None}) == load_settings({})
