"""Tests for demo_exchange.py over real sockets (websockets client + urllib)."""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import demo_exchange as dx  # noqa: E402

CAPTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-spot-capture"
TRADE_KEYS = ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
HEDGE_TOLERANCE = 0.1  # |OLS beta - HEDGE_RATIO| on one hour of 1-second bars
RECV_TIMEOUT = 10.0


@pytest.fixture
def make_exchange() -> Iterator[Callable[..., dx.DemoExchange]]:
    """Factory starting DemoExchange instances in threads; all are stopped at teardown."""
    started: list[dx.DemoExchange] = []

    def factory(**kwargs: Any) -> dx.DemoExchange:
        exchange = dx.DemoExchange(**kwargs).start_in_thread()
        started.append(exchange)
        return exchange

    yield factory
    for exchange in started:
        exchange.stop_in_thread()


def stream_url(exchange: dx.DemoExchange, *streams: str) -> str:
    """Combined-stream URL for the given stream names."""
    return f"{exchange.ws_url}/stream?streams={'/'.join(streams)}"


def ws_connect(url: str) -> Any:
    """websockets client that never stops reading (so closing never stalls behind a full queue)."""
    return connect(url, max_queue=None, max_size=None, close_timeout=1)


async def recv_frames(ws: ClientConnection, count: int, predicate: Callable[[dict], bool] = lambda f: True
                      ) -> list[tuple[str, dict]]:
    """Receive until ``count`` frames satisfying ``predicate`` arrived; returns (raw, parsed) pairs."""
    out: list[tuple[str, dict]] = []
    async with asyncio.timeout(RECV_TIMEOUT):
        while len(out) < count:
            raw = await ws.recv()
            frame = json.loads(raw)
            if predicate(frame):
                out.append((raw, frame))
    return out


def is_trade(frame: dict) -> bool:
    """True for a combined-stream trade frame."""
    return frame.get("stream", "").endswith("@trade")


def get_json(url: str) -> tuple[int, dict[str, str], Any]:
    """GET a URL; returns (status, headers, parsed JSON body) also for HTTP errors."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


# ---------------------------------------------------------------------------------------------- streams


@pytest.mark.parametrize("pregenerate", [False, True])
def test_frames_schema_ids_and_shared_milliseconds(make_exchange: Callable[..., dx.DemoExchange],
                                                   pregenerate: bool) -> None:
    """Frames match Binance exactly, ids are contiguous per symbol and equal history, T is shared often
    (also when the frames are built before serving, as the ingest benchmark does)."""
    total = 4000
    exchange = make_exchange(speed=0, max_trades=total, start_paused=True, seed=3, pregenerate=pregenerate)
    streams = [f"{s.lower()}@trade" for s in dx.DEFAULT_SYMBOLS]

    async def run() -> list[tuple[str, dict]]:
        async with ws_connect(stream_url(exchange, *streams)) as ws:
            assert exchange.wait_for_clients(1)
            exchange.resume()
            return await recv_frames(ws, total)

    frames = asyncio.run(run())
    assert exchange.wait_done(5)
    by_symbol: dict[str, list[dict]] = collections.defaultdict(list)
    for raw, frame in frames:
        assert list(frame) == ["stream", "data"]
        data = frame["data"]
        assert list(data) == TRADE_KEYS
        assert frame["stream"] == data["s"].lower() + "@trade"
        assert data["e"] == "trade" and data["M"] is True and isinstance(data["m"], bool)
        for key in ("E", "t", "T"):
            assert type(data[key]) is int
        for key in ("p", "q"):
            assert isinstance(data[key], str) and len(data[key].split(".")[1]) == 8 and float(data[key]) > 0
        assert data["E"] >= data["T"] and data["t"] > 2**31
        by_symbol[data["s"]].append(data)
    assert set(by_symbol) == set(dx.DEFAULT_SYMBOLS)
    shared_ms = 0
    for symbol, trades in by_symbol.items():
        ids = [t["t"] for t in trades]
        assert ids == list(range(dx.KNOWN_SPECS[symbol].first_trade_id, ids[0] + len(ids)))
        history = exchange.history(symbol)
        assert [(h.id, h.price, h.qty, h.time, h.is_buyer_maker) for h in history] == [
            (t["t"], t["p"], t["q"], t["T"], t["m"]) for t in trades]
        times = collections.Counter(t["T"] for t in trades)
        shared_ms += sum(n for n in times.values() if n > 1)
    assert shared_ms > total * 0.3, "bursts should make many trades share one millisecond"
    stats = exchange.stats()
    assert sum(stats["trades_generated"].values()) == total and stats["frames_sent"] == total


def test_subscribe_unsubscribe_and_list(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """SUBSCRIBE / LIST_SUBSCRIPTIONS / UNSUBSCRIBE replies are Binance's, and streams follow them."""
    exchange = make_exchange(rate=3000, symbols=["BTCUSDT", "BNBUSDT"])

    async def run() -> None:
        async with ws_connect(stream_url(exchange, "btcusdt@trade")) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["bnbusdt@trade", "bnbusdt@bookTicker"],
                                      "id": 1}))
            replies = await recv_frames(ws, 1, lambda f: "id" in f)
            assert replies[0][0] == '{"result":null,"id":1}'
            await recv_frames(ws, 5, lambda f: f.get("stream") == "bnbusdt@trade")
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            listing = (await recv_frames(ws, 1, lambda f: "id" in f))[0][1]
            assert listing == {"result": ["btcusdt@trade", "bnbusdt@trade", "bnbusdt@bookTicker"], "id": 2}
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 3}))
            assert (await recv_frames(ws, 1, lambda f: "id" in f))[0][1] == {"result": None, "id": 3}
            later = await recv_frames(ws, 100)
            assert all(f.get("stream") == "bnbusdt@trade" for _, f in later)

    asyncio.run(run())


def test_invalid_stream_name_is_http_400(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """A malformed stream name in the URL is refused before the upgrade."""
    exchange = make_exchange()
    status, _, body = get_json(f"{exchange.rest_url}/stream?streams=btc%20usdt@trade")
    assert status == 400 and body["code"] == -1100


# ---------------------------------------------------------------------------------------------- REST


def test_withheld_trades_are_only_in_rest(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """Withheld trades never reach the socket but historicalTrades serves them, so the gap is fillable."""
    total, withheld = 3000, 40
    exchange = make_exchange(symbols=["BTCUSDT", "ETHUSDT"], speed=0, max_trades=total, start_paused=True)
    exchange.withhold("BTCUSDT", withheld)

    async def run() -> list[int]:
        async with ws_connect(stream_url(exchange, "btcusdt@trade")) as ws:
            assert exchange.wait_for_clients(1)
            exchange.resume()
            assert await asyncio.to_thread(exchange.wait_done, 10)
            expected = len(exchange.history("BTCUSDT")) - withheld
            return [f["data"]["t"] for _, f in await recv_frames(ws, expected)]

    ids = asyncio.run(run())
    first = dx.KNOWN_SPECS["BTCUSDT"].first_trade_id
    assert ids[0] == first + withheld and ids == list(range(ids[0], ids[0] + len(ids)))
    status, headers, body = get_json(f"{exchange.rest_url}/api/v3/historicalTrades?symbol=BTCUSDT&fromId={first}"
                                     f"&limit={withheld}")
    assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) == 25
    assert [t["id"] for t in body] == list(range(first, first + withheld))
    history = exchange.history("BTCUSDT")[:withheld]
    assert [(t["price"], t["qty"], t["time"], t["isBuyerMaker"]) for t in body] == [
        (h.price, h.qty, h.time, h.is_buyer_maker) for h in history]
    assert list(body[0]) == ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"]
    assert abs(float(body[0]["quoteQty"]) - float(body[0]["price"]) * float(body[0]["qty"])) < 1e-6
    # Without fromId: the most recent trades; beyond the end: empty.
    _, headers, latest = get_json(f"{exchange.rest_url}/api/v3/historicalTrades?symbol=btcusdt&limit=5")
    assert [t["id"] for t in latest] == [h.id for h in exchange.history("BTCUSDT")[-5:]]
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) == 50
    _, _, empty = get_json(f"{exchange.rest_url}/api/v3/historicalTrades?symbol=BTCUSDT&fromId={first + 10**9}")
    assert empty == []


@pytest.mark.parametrize("query, code", [
    ("", -1102),
    ("symbol=DOGEUSDT", -1121),
    ("symbol=BTCUSDT&limit=abc", -1100),
    ("symbol=BTCUSDT&limit=1001", -1130),
    ("symbol=BTCUSDT&limit=0", -1130),
    ("symbol=BTCUSDT&fromId=-5", -1100),
])
def test_historical_trades_bad_params(make_exchange: Callable[..., dx.DemoExchange], query: str, code: int) -> None:
    """Bad parameters give HTTP 400 with a Binance-style error body."""
    exchange = make_exchange(rate=100)
    status, _, body = get_json(f"{exchange.rest_url}/api/v3/historicalTrades?{query}")
    assert status == 400 and body["code"] == code and body["msg"]


def test_rate_limit_429(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """Over the configured weight the server answers 429 with Retry-After; forced 429s work too."""
    exchange = make_exchange(rate=100, rest_weight_limit=50)
    url = f"{exchange.rest_url}/api/v3/historicalTrades?symbol=BTCUSDT&limit=1"
    assert get_json(url)[0] == 200 and get_json(url)[0] == 200
    status, headers, body = get_json(url)
    assert status == 429 and body["code"] == -1003 and 1 <= int(headers["Retry-After"]) <= 60
    other = make_exchange(rate=100)
    other.force_rate_limit(1, retry_after=7)
    status, headers, _ = get_json(f"{other.rest_url}/api/v3/ping")
    assert status == 429 and headers["Retry-After"] == "7"
    assert get_json(f"{other.rest_url}/api/v3/ping")[:3:2] == (200, {})
    assert other.stats()["rest_calls"] == 2


def test_exchange_info_time_ping(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """exchangeInfo lists the configured symbols; time and ping answer like Binance."""
    exchange = make_exchange(symbols=["BTCUSDT", "ETHUSDT"])
    status, _, info = get_json(f"{exchange.rest_url}/api/v3/exchangeInfo")
    assert status == 200 and info["timezone"] == "UTC" and isinstance(info["serverTime"], int)
    assert [(s["symbol"], s["status"], s["baseAsset"], s["quoteAsset"]) for s in info["symbols"]] == [
        ("BTCUSDT", "TRADING", "BTC", "USDT"), ("ETHUSDT", "TRADING", "ETH", "USDT")]
    assert get_json(f"{exchange.rest_url}/api/v3/ping")[2] == {}
    assert isinstance(get_json(f"{exchange.rest_url}/api/v3/time")[2]["serverTime"], int)


# ---------------------------------------------------------------------------------------------- faults


def test_server_shutdown_frame_then_close(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """serverShutdown is sent as Binance does, then the connection is closed after the grace period."""
    exchange = make_exchange(rate=500)

    async def run() -> None:
        async with ws_connect(stream_url(exchange, "btcusdt@trade")) as ws:
            assert exchange.wait_for_clients(1)
            assert exchange.server_shutdown(grace=0.2) == 1
            (raw, frame), = await recv_frames(ws, 1, lambda f: f.get("stream") == "!serverShutdown")
            assert list(frame["data"]) == ["e", "E"] and frame["data"]["e"] == "serverShutdown"
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(RECV_TIMEOUT):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1001

    asyncio.run(run())


def test_drop_connections_is_abrupt(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """drop_connections() kills the TCP connection without a close frame."""
    exchange = make_exchange(rate=500)

    async def run() -> None:
        async with ws_connect(stream_url(exchange, "btcusdt@trade")) as ws:
            assert exchange.wait_for_clients(1)
            await recv_frames(ws, 1)
            assert exchange.drop_connections() == 1
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(RECV_TIMEOUT):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1006  # abnormal closure: no close frame received

    asyncio.run(run())


def test_server_sends_pings(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """The server pings at the configured interval (raw socket client, to see control frames)."""
    exchange = make_exchange(symbols=["BTCUSDT"], rate=50, ping_interval=0.1, ping_timeout=5)
    with socket.create_connection((exchange.host, exchange.port), timeout=5) as sock:
        sock.sendall(b"GET /stream?streams=solusdt@trade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 101")
        data = data.split(b"\r\n\r\n", 1)[1]
        while len(data) < 2:
            data += sock.recv(4096)
        assert data[0] == 0x89  # FIN + opcode 9 (ping); solusdt is not traded, so nothing else is sent


def test_max_connection_age(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """Connections are closed after the configured maximum age (Binance: 24 h)."""
    exchange = make_exchange(rate=200, max_connection_age=0.3)

    async def run() -> None:
        async with ws_connect(stream_url(exchange, "btcusdt@trade")) as ws:
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(RECV_TIMEOUT):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1000

    asyncio.run(run())


def test_malformed_duplicates_legacy_and_overlap(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """Fault frames arrive as requested: malformed ones, duplicates, legacy b/a keys, reconnect overlap."""
    exchange = make_exchange(symbols=["BTCUSDT"], speed=0, max_trades=500, start_paused=True)

    async def run() -> None:
        async with ws_connect(stream_url(exchange, "btcusdt@trade")) as ws:
            assert exchange.wait_for_clients(1)
            exchange.resume()
            assert await asyncio.to_thread(exchange.wait_done, 10)
            await recv_frames(ws, 500)
            assert exchange.send_malformed(len(dx.MALFORMED_KINDS)) == len(dx.MALFORMED_KINDS)
            raws = []
            async with asyncio.timeout(RECV_TIMEOUT):
                for _ in dx.MALFORMED_KINDS:
                    raws.append(await ws.recv())
            with pytest.raises(json.JSONDecodeError):
                json.loads(raws[0])  # bad_json comes first
            parsed = [json.loads(r)["data"] for r in raws[1:]]
            assert "p" not in parsed[0] and parsed[1]["t"] == "not-a-number"
            assert parsed[-2]["T"] == dx.YEAR_3000_MS and parsed[-1]["s"] == "XYZUSDT"
            exchange.send_duplicates(3)
            dups = [f["data"]["t"] for _, f in await recv_frames(ws, 3)]
            assert dups == [h.id for h in exchange.history("BTCUSDT")[-3:]]
        exchange.set_reconnect_overlap(4)
        async with ws_connect(stream_url(exchange, "btcusdt@trade")) as ws:
            overlap = [f["data"]["t"] for _, f in await recv_frames(ws, 4)]
            assert overlap == [h.id for h in exchange.history("BTCUSDT")[-4:]]
        assert exchange.stats()["connections_accepted"] == 2

    asyncio.run(run())

    legacy = make_exchange(symbols=["ETHUSDT"], speed=0, max_trades=10, start_paused=True)
    legacy.add_legacy_fields(2)

    async def run_legacy() -> None:
        async with ws_connect(stream_url(legacy, "ethusdt@trade")) as ws:
            assert legacy.wait_for_clients(1)
            legacy.resume()
            frames = [f["data"] for _, f in await recv_frames(ws, 10)]
            assert list(frames[0]) == ["e", "E", "s", "t", "p", "q", "b", "a", "T", "m", "M"]
            assert list(frames[2]) == TRADE_KEYS

    asyncio.run(run_legacy())


# ---------------------------------------------------------------------------------------------- model


def test_synthetic_pair_recovers_hedge_ratio() -> None:
    """OLS of 1-second log closes (ETH on BTC) recovers HEDGE_RATIO; residuals mean-revert."""
    start_ms, seconds = 1_700_000_000_000, 3600
    market = dx.SyntheticMarket(["BTCUSDT", "ETHUSDT"], seed=11, rate=40, start_ms=start_ms)
    closes = {s: np.full(seconds, np.nan) for s in ("BTCUSDT", "ETHUSDT")}
    for symbol, trade, _ in market.generate_until(seconds):
        second = (trade.time - start_ms) // 1000
        if second < seconds:
            closes[symbol][second] = float(trade.price)
    for series in closes.values():  # forward-fill seconds without trades
        for i in range(1, seconds):
            if np.isnan(series[i]):
                series[i] = series[i - 1]
    x, y = np.log(closes["BTCUSDT"][1:]), np.log(closes["ETHUSDT"][1:])
    alpha, beta = np.linalg.lstsq(np.column_stack([np.ones_like(x), x]), y, rcond=None)[0]
    assert abs(beta - dx.HEDGE_RATIO) < HEDGE_TOLERANCE
    residual = y - alpha - beta * x
    phi = np.polyfit(residual[:-1], residual[1:], 1)[0]
    half_life = -np.log(2) / np.log(phi)
    # AR(1) on trade-price bars is biased low (asynchronous closes, short sample): only check the scale.
    assert dx.HALF_LIFE_SECONDS / 4 < half_life < dx.HALF_LIFE_SECONDS * 2


@pytest.mark.parametrize("options", [{"speed": 1.0, "max_trades": 10}, {"speed": 0}])
def test_pregenerate_needs_speed_0_and_max_trades(options: dict) -> None:
    with pytest.raises(ValueError, match="pregenerate"):
        dx.DemoExchange(pregenerate=True, **options)


def test_synthetic_is_deterministic() -> None:
    """Same seed and start time give the same trades."""
    a = dx.SyntheticMarket(seed=5, start_ms=0).generate_count(500)
    b = dx.SyntheticMarket(seed=5, start_ms=0).generate_count(500)
    assert a == b and dx.SyntheticMarket(seed=6, start_ms=0).generate_count(500) != a


# ---------------------------------------------------------------------------------------------- replay


def capture_trade_frames(paths: list[Path]) -> list[str]:
    """Trade frames of the capture files in arrival order (stable sort on receive time)."""
    lines: list[tuple[int, str]] = []
    for path in paths:
        with gzip.open(path, "rt") as fh:
            for line in fh:
                recv_ns, frame = line.rstrip("\n").split(" ", 1)
                if frame.startswith('{"stream":"') and '@trade"' in frame[:40]:
                    lines.append((int(recv_ns), frame))
    lines.sort(key=lambda item: item[0])
    return [frame for _, frame in lines]


@pytest.mark.skipif(not CAPTURE_DIR.is_dir(), reason=f"capture data not present at {CAPTURE_DIR}")
def test_replay_forwards_capture_byte_for_byte(make_exchange: Callable[..., dx.DemoExchange]) -> None:
    """Replay mode forwards the capture's trade frames unchanged and serves them via historicalTrades."""
    paths = sorted(CAPTURE_DIR.glob("*.gz"))
    expected = capture_trade_frames(paths)
    exchange = make_exchange(replay_paths=paths, speed=0, start_paused=True)
    assert sorted(exchange.symbols) == ["BTCUSDT", "ETHUSDT"]

    async def run() -> list[str]:
        async with ws_connect(stream_url(exchange, "btcusdt@trade", "ethusdt@trade")) as ws:
            assert exchange.wait_for_clients(1)
            exchange.resume()
            got: list[str] = []
            async with asyncio.timeout(30):
                while len(got) < len(expected):
                    got.append(await ws.recv())
            return got

    got = asyncio.run(run())
    assert got == expected
    first_eth = json.loads(next(f for f in expected if f.startswith('{"stream":"ethusdt')))["data"]
    status, _, body = get_json(f"{exchange.rest_url}/api/v3/historicalTrades?symbol=ETHUSDT"
                               f"&fromId={first_eth['t']}&limit=2")
    assert status == 200 and body[0]["id"] == first_eth["t"] and body[0]["price"] == first_eth["p"]
    assert body[0]["time"] == first_eth["T"] and body[1]["id"] == first_eth["t"] + 1


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("args, option", [
    (["--rate", "-3"], "--rate"),
    (["--port", "70000"], "--port"),
    (["--speed", "fast"], "--speed"),
    (["--replay", "/nonexistent.gz"], "--replay"),
])
def test_cli_bad_values(args: list[str], option: str) -> None:
    """Bad CLI values print one line naming the option and exit 2."""
    proc = subprocess.run([sys.executable, str(ROOT / "demo_exchange.py"), *args],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0]


def test_cli_prints_urls_and_exits_cleanly_on_sigterm() -> None:
    """The CLI prints its URLs, serves REST, and exits 0 on SIGTERM."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "demo_exchange.py"), "--port", "0", "--rate", "50",
                             "--symbols", "btcusdt,ethusdt", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        rest_url = line.split("BINANCE_REST_URL=")[1].strip()
        assert "BINANCE_WS_URL=ws://127.0.0.1:" in line
        assert get_json(f"{rest_url}/api/v3/ping")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
