"""AG Grid columnDefs are sent only when they change.

Resetting columnDefs is not free in AG Grid: on a grid still without rows (no alert events, no backtest trades
yet) every reset adds column-state listeners that AG Grid releases only when the first rows arrive. Sent with
every bar close (and every 1 s tick for feed health), that grew the page's JS heap without bound
(bench/bench_dashboard.py --snapshots showed the chain under AG Grid's dataTypeSvc).
"""
from __future__ import annotations

from dataclasses import asdict

try:  # tests/ is a package when it has __init__.py, else a rootdir on sys.path
    from tests.test_exports import SYMBOLS, client, dashboard, market  # noqa: F401 - fixtures
except ImportError:
    from test_exports import SYMBOLS, client, dashboard, market  # noqa: F401

GRIDS = ("stats-grid", "trades-grid", "alerts-grid")


def test_refresh_sends_column_defs_only_when_they_change(client, dashboard) -> None:
    view = asdict(dashboard.exports.default_view(SYMBOLS))
    output = next(k for k in dashboard.app.callback_map if k.strip(".").startswith("candles-a.figure"))

    def refresh(columns: dict[str, list | None], rendered: dict | None) -> dict:
        outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in output.strip(".").split("...")]
        body = {"output": output, "outputs": outputs, "changedPropIds": ["bar-key.data"],
                "inputs": [{"id": "view", "property": "data", "value": view},
                           {"id": "bar-key", "property": "data", "value": {"key": "k", "at": 1}}],
                "state": [{"id": "rendered", "property": "data", "value": rendered},
                          *[{"id": g, "property": "columnDefs", "value": columns[g]} for g in GRIDS]]}
        response = client.post("/_dash-update-component", json=body)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        return response.get_json()["response"]

    first = refresh(dict.fromkeys(GRIDS), None)
    shown = {g: first[g]["columnDefs"] for g in GRIDS}
    assert all(shown.values())
    again = refresh(shown, {"view": view, "key": {"key": "k", "at": 1}})
    assert all("columnDefs" not in again[g] and "rowData" in again[g] for g in GRIDS)


def test_feed_health_columns_are_in_the_layout_not_in_the_1s_tick(dashboard) -> None:
    tick_outputs = next(k for k in dashboard.app.callback_map if k.strip(".").startswith("ticker.children"))
    assert "health-grid.columnDefs" not in tick_outputs
    layout = dashboard.build_layout()
    health = next(c for c in layout._traverse() if getattr(c, "id", None) == "health-grid")
    assert health.columnDefs == dashboard.HEALTH_COLUMNS
