"""Local stand-in for Binance spot: combined trade streams + REST on one port, for demos, tests and benchmarks.

One ``websockets`` server answers both protocols on the same port:

* ``ws://HOST:PORT/stream?streams=btcusdt@trade/ethusdt@trade`` upgrades to a WebSocket that speaks
  Binance's combined-stream protocol (frames, SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, server pings,
  ``!serverShutdown``, maximum connection age).
* ``http://HOST:PORT/api/v3/...`` plain GETs are answered in the ``process_request`` hook:
  ``historicalTrades``, ``trades``, ``exchangeInfo``, ``ping``, ``time``, with ``X-MBX-USED-WEIGHT-1M``
  and optional HTTP 429 rate limiting.

Trades come either from a seeded synthetic market (:class:`SyntheticMarket`) or from a replay of the
recorded capture format (``<recv_ns> <frame json>`` per gzip line), forwarded byte for byte.

Synthetic pair model (log prices, see the constants below)::

    log(ETHUSDT) = PAIR_ALPHA + HEDGE_RATIO * log(BTCUSDT) + s,   s ~ OU(half-life HALF_LIFE_SECONDS, sd SPREAD_STD)

Feed pacing: ``speed`` 1 paces synthetic time (or the capture's receive times) to the wall clock, N runs N
times faster, 0 runs as fast as the slowest connected client reads -- and only while at least one client is
connected, so a benchmark client sees every trade. ``max_trades`` stops the feed after exactly that many
trades (``wait_done()``), ``start_paused`` + ``resume()`` let a test connect first. Synthetic trade times are
``start_ms + sim_time``; ``wall_clock_times`` stamps E/T with the wall clock instead (latency benchmarks).
``history_seconds`` pre-generates that much history for historicalTrades before serving (about 6 s per
1,000 s at 300 trades/s).

Test usage::

    with DemoExchange(symbols=["BTCUSDT", "ETHUSDT"], speed=0, max_trades=1000, start_paused=True) as ex:
        ...connect to f"{ex.ws_url}/stream?streams=btcusdt@trade"; ex.wait_for_clients(1); ex.resume()
        ex.wait_done(); ex.history("BTCUSDT"); urllib GET f"{ex.rest_url}/api/v3/historicalTrades?..."

Stream-name policy: a syntactically invalid stream name in the URL is rejected with HTTP 400 (Binance-style
JSON body); a well-formed name for an unknown symbol or a non-trade stream (``@bookTicker``, ``@depth``) is
accepted and simply never produces frames in synthetic mode (replay mode forwards whatever the capture holds).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import concurrent.futures
import gzip
import http
import logging
import math
import random
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")
DEFAULT_SEED = 7
DEFAULT_RATE = 300.0  # trades per second, all symbols together
DEFAULT_PORT = 9443
DEFAULT_HOST = "127.0.0.1"

# Synthetic cointegrated pair: log(ETH) = PAIR_ALPHA + HEDGE_RATIO * log(BTC) + s  (LOG prices).
PAIR_X = "BTCUSDT"
PAIR_Y = "ETHUSDT"
HEDGE_RATIO = 1.2  # beta of log(ETHUSDT) on log(BTCUSDT)
HALF_LIFE_SECONDS = 60.0  # half-life of the OU spread s, in seconds (i.e. 60 one-second bars)
SPREAD_STD = 0.0015  # stationary standard deviation of s (log units, i.e. ~15 bp)
MARKET_VOL_PER_SQRT_SECOND = 2e-4  # common-factor log-price volatility per sqrt(second)
LATENT_STEP_SECONDS = 0.1  # the latent (efficient) log prices evolve on this grid

# Arrivals: bursts (one taker order sweeping several makers => trades sharing one millisecond T).
MEAN_BURST_TRADES = 4.0  # mean number of trades per burst (geometric)
SWEEP_TICK_PROBABILITY = 0.3  # chance that the next fill in a burst is one tick further away
BUSY_INTENSITY_MULTIPLIER = 3.0  # burst rate in the busy regime relative to the calm regime
CALM_REGIME_MEAN_SECONDS = 6.0
BUSY_REGIME_MEAN_SECONDS = 2.0
QTY_LOG_SIGMA = 1.2  # lognormal dispersion of trade sizes
QTY_TABLE_SIZE = 4096  # distinct pre-drawn trade sizes per symbol (keeps generation cheap)
EVENT_DELAY_MS = 1  # E - T, as typically seen on Binance

E8 = 100_000_000  # prices and quantities are carried as integers in units of 1e-8
YEAR_3000_MS = 32_503_680_000_000

# Server behaviour.
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTION_AGE = 24 * 3600.0
DEFAULT_SHUTDOWN_GRACE = 1.0
PACED_TICK_SECONDS = 0.01  # paced modes publish what is due every 10 ms
FAST_BATCH_TRADES = 256  # as-fast-as-possible modes publish in batches of this many trades
FAST_HIGH_WATER_FRAMES = 8 * FAST_BATCH_TRADES  # fast feed waits while a client has more than this queued
MAX_PENDING_FRAMES = 500_000  # paced modes disconnect a client that falls this far behind
SEND_CHUNK_FRAMES = 512  # frames written to the transport per flow-control check
RECENT_FRAMES_PER_STREAM = 1000  # ring buffer used for duplicates and reconnect overlap
DEFAULT_HISTORY_LIMIT = 2_000_000  # trades kept per symbol for REST
STREAM_NAME_RE = re.compile(r"^!?[A-Za-z0-9_]+(@[A-Za-z0-9_]+)*$")

# REST.
REST_WINDOW_SECONDS = 60.0
BINANCE_WEIGHT_LIMIT = 6000
HISTORICAL_TRADES_DEFAULT_LIMIT = 500
HISTORICAL_TRADES_MAX_LIMIT = 1000
ENDPOINT_WEIGHTS = {
    "/api/v3/historicalTrades": 25,
    "/api/v3/trades": 25,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
}

MALFORMED_KINDS = (
    "bad_json",
    "missing_key",
    "wrong_type",
    "negative_price",
    "zero_qty",
    "nan_price",
    "inf_qty",
    "zero_time",
    "future_time",
    "unknown_stream",
)


# --------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------


class Trade(NamedTuple):
    """One trade as served by historicalTrades (price/qty as Binance decimal strings)."""

    id: int
    price: str
    qty: str
    time: int
    is_buyer_maker: bool


@dataclass(frozen=True)
class SymbolSpec:
    """Static market parameters of one synthetic symbol."""

    symbol: str
    base: str
    quote: str
    start_price: float
    tick_e8: int  # tick size in 1e-8 units
    lot_e8: int  # lot (step) size in 1e-8 units
    mean_qty: float  # mean trade size in base units
    first_trade_id: int
    factor_loading: float  # exposure of log price to the common market factor
    idio_vol: float  # idiosyncratic random-walk vol per sqrt(second) (unused for PAIR_Y, which has the OU)
    weight: float  # share of trade arrivals


KNOWN_SPECS: dict[str, SymbolSpec] = {
    s.symbol: s
    for s in (
        SymbolSpec("BTCUSDT", "BTC", "USDT", 60_000.0, 1_000_000, 1_000, 0.02, 3_000_000_000, 1.0, 0.0, 0.40),
        SymbolSpec("ETHUSDT", "ETH", "USDT", 3_000.0, 1_000_000, 10_000, 0.3, 2_500_000_000, HEDGE_RATIO, 0.0, 0.30),
        SymbolSpec("BNBUSDT", "BNB", "USDT", 550.0, 1_000_000, 100_000, 1.0, 2_200_000_000, 0.7, 1e-4, 0.15),
        SymbolSpec("SOLUSDT", "SOL", "USDT", 150.0, 1_000_000, 100_000, 5.0, 2_300_000_000, 1.4, 2e-4, 0.15),
    )
}
PAIR_ALPHA = math.log(KNOWN_SPECS[PAIR_Y].start_price) - HEDGE_RATIO * math.log(KNOWN_SPECS[PAIR_X].start_price)
GENERIC_FIRST_TRADE_ID = 2_147_483_648 + 100_000_000  # > 2^31, for symbols without a known spec
QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


def spec_for(symbol: str, index: int = 0) -> SymbolSpec:
    """Known spec for a symbol, or a generic small-cap one."""
    symbol = symbol.upper()
    if symbol in KNOWN_SPECS:
        return KNOWN_SPECS[symbol]
    quote = next((q for q in QUOTE_ASSETS if symbol.endswith(q) and len(symbol) > len(q)), "USDT")
    base = symbol[: -len(quote)] if symbol.endswith(quote) else symbol
    return SymbolSpec(symbol, base, quote, 1.0, 10_000, 10_000_000, 500.0,
                      GENERIC_FIRST_TRADE_ID + index * 10_000_000_000, 1.0, 3e-4, 0.1)


def format_e8(value: int) -> str:
    """Format an integer number of 1e-8 units as Binance's 8-decimal string."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}{value // E8}.{value % E8:08d}"


def parse_e8(text: str) -> int:
    """Parse a Binance decimal string into integer 1e-8 units."""
    whole, _, frac = text.partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole or "0")) * E8 + int((frac + "00000000")[:8]))


def encode_trade_frame(symbol: str, trade: Trade, event_ms: int) -> bytes:
    """Encode a combined-stream trade frame exactly like Binance (key order, 8-decimal strings)."""
    maker = "true" if trade.is_buyer_maker else "false"
    return (
        f'{{"stream":"{symbol.lower()}@trade","data":{{"e":"trade","E":{event_ms},"s":"{symbol}",'
        f'"t":{trade.id},"p":"{trade.price}","q":"{trade.qty}","T":{trade.time},"m":{maker},"M":true}}}}'
    ).encode()


def wire_text_frame(payload: bytes) -> bytes:
    """Serialise a payload as one unmasked, unfragmented server-to-client WebSocket text frame (RFC 6455)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------------------
# Synthetic market
# --------------------------------------------------------------------------------------------------


class SyntheticMarket:
    """Seeded generator of bursty trades; BTC/ETH cointegrated in log prices, others via a common factor."""

    def __init__(self, symbols: Sequence[str] = DEFAULT_SYMBOLS, seed: int = DEFAULT_SEED,
                 rate: float = DEFAULT_RATE, start_ms: int | None = None) -> None:
        """Create the market; sim time 0 maps to ``start_ms`` (default: now)."""
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.specs = [spec_for(s, i) for i, s in enumerate(symbols)]
        self.symbols = [s.symbol for s in self.specs]
        self.start_ms = now_ms() if start_ms is None else start_ms
        self.sim_time = 0.0  # seconds since start
        self._rng = random.Random(seed)
        self._next_id = [s.first_trade_id for s in self.specs]
        self._qty_tables = [self._make_qty_table(s) for s in self.specs]
        self._cum_weights = list(_cumsum([s.weight for s in self.specs]))
        self._market = 0.0  # common log factor (== log(BTC/BTC0))
        self._spread = 0.0  # OU spread of the pair
        self._idio = [0.0] * len(self.specs)
        self._latent_time = 0.0
        self._ou_phi = math.exp(-math.log(2) / HALF_LIFE_SECONDS * LATENT_STEP_SECONDS)
        self._ou_shock = SPREAD_STD * math.sqrt(1 - self._ou_phi**2)
        self._sqrt_step = math.sqrt(LATENT_STEP_SECONDS)
        self._log_mid = [0.0] * len(self.specs)
        self._update_mids()
        # Two-regime intensity, normalised so the long-run average is ``rate`` trades/s.
        calm_share = CALM_REGIME_MEAN_SECONDS / (CALM_REGIME_MEAN_SECONDS + BUSY_REGIME_MEAN_SECONDS)
        mean_multiplier = calm_share + (1 - calm_share) * BUSY_INTENSITY_MULTIPLIER
        self._calm_burst_rate = rate / MEAN_BURST_TRADES / mean_multiplier
        self._busy = False
        self._regime_end = self._rng.expovariate(1 / CALM_REGIME_MEAN_SECONDS)
        self._geometric_p = 1 / MEAN_BURST_TRADES
        self._next_burst = self._rng.expovariate(self._calm_burst_rate)

    def _make_qty_table(self, spec: SymbolSpec) -> list[str]:
        """Pre-drawn lognormal trade sizes (whole lots, as strings); trades sample from it cheaply."""
        mean_lots = spec.mean_qty * E8 / spec.lot_e8
        mu = math.log(mean_lots) - QTY_LOG_SIGMA**2 / 2
        return [format_e8(max(1, int(self._rng.lognormvariate(mu, QTY_LOG_SIGMA))) * spec.lot_e8)
                for _ in range(QTY_TABLE_SIZE)]

    def _update_mids(self) -> None:
        """Recompute the latent log mid prices from the factor state."""
        for i, spec in enumerate(self.specs):
            base = math.log(spec.start_price) + spec.factor_loading * self._market
            if spec.symbol == PAIR_Y:
                base += self._spread
            else:
                base += self._idio[i]
            self._log_mid[i] = base

    def _advance_latent(self, until: float) -> None:
        """Step the latent processes on the LATENT_STEP_SECONDS grid up to ``until``."""
        gauss = self._rng.gauss
        stepped = False
        while self._latent_time + LATENT_STEP_SECONDS <= until:
            self._latent_time += LATENT_STEP_SECONDS
            self._market += MARKET_VOL_PER_SQRT_SECOND * self._sqrt_step * gauss(0.0, 1.0)
            self._spread = self._spread * self._ou_phi + self._ou_shock * gauss(0.0, 1.0)
            for i, spec in enumerate(self.specs):
                if spec.idio_vol:
                    self._idio[i] += spec.idio_vol * self._sqrt_step * gauss(0.0, 1.0)
            stepped = True
        if stepped:
            self._update_mids()

    def _burst(self, wall_ms: int | None) -> list[tuple[str, Trade, int]]:
        """Generate the trades of the burst due at ``self._next_burst`` and schedule the next one."""
        rng = self._rng
        t = self._next_burst
        self.sim_time = t
        self._advance_latent(t)
        i = bisect.bisect_right(self._cum_weights, rng.random() * self._cum_weights[-1])
        i = min(i, len(self.specs) - 1)
        spec = self.specs[i]
        size = 1
        while rng.random() > self._geometric_p:
            size += 1
        buyer_maker = rng.random() < 0.5
        mid = math.exp(self._log_mid[i]) * E8
        bid_ticks = int(mid // spec.tick_e8)
        ticks = bid_ticks if buyer_maker else bid_ticks + 1
        step = -1 if buyer_maker else 1
        trade_ms = (self.start_ms + int(t * 1000)) if wall_ms is None else wall_ms
        event_ms = trade_ms + EVENT_DELAY_MS
        qty_table = self._qty_tables[i]
        price = format_e8(max(1, ticks) * spec.tick_e8)
        out = []
        for _ in range(size):
            trade = Trade(self._next_id[i], price, qty_table[int(rng.random() * QTY_TABLE_SIZE)],
                          trade_ms, buyer_maker)
            self._next_id[i] += 1
            out.append((spec.symbol, trade, event_ms))
            if rng.random() < SWEEP_TICK_PROBABILITY:
                ticks += step
                price = format_e8(max(1, ticks) * spec.tick_e8)
        # Regime switch and next arrival.
        while t >= self._regime_end:
            self._busy = not self._busy
            mean = BUSY_REGIME_MEAN_SECONDS if self._busy else CALM_REGIME_MEAN_SECONDS
            self._regime_end += rng.expovariate(1 / mean)
        rate = self._calm_burst_rate * (BUSY_INTENSITY_MULTIPLIER if self._busy else 1.0)
        self._next_burst = t + rng.expovariate(rate)
        return out

    def generate_until(self, sim_seconds: float, wall_ms: int | None = None) -> list[tuple[str, Trade, int]]:
        """All trades with sim time <= ``sim_seconds`` as (symbol, Trade, event_ms)."""
        out: list[tuple[str, Trade, int]] = []
        while self._next_burst <= sim_seconds:
            out.extend(self._burst(wall_ms))
        self.sim_time = max(self.sim_time, sim_seconds)
        return out

    def generate_count(self, count: int, wall_ms: int | None = None) -> list[tuple[str, Trade, int]]:
        """At least ``count`` trades (whole bursts); ``wall_ms`` overrides T/E with a wall-clock stamp."""
        out: list[tuple[str, Trade, int]] = []
        while len(out) < count:
            out.extend(self._burst(wall_ms))
        return out


def _cumsum(values: Iterable[float]) -> Iterable[float]:
    """Running sum."""
    total = 0.0
    for v in values:
        total += v
        yield total


# --------------------------------------------------------------------------------------------------
# Replay of recorded captures
# --------------------------------------------------------------------------------------------------


class ReplayFrame(NamedTuple):
    """One recorded combined-stream frame, kept as the exact bytes Binance sent."""

    recv_ns: int
    stream: str
    frame: bytes
    symbol: str | None  # set for trade frames
    trade: Trade | None


def load_capture(paths: Sequence[str | Path]) -> list[ReplayFrame]:
    """Read ``<recv_ns> <frame>`` gzip files, skip REST snapshots, merge stably by receive time."""
    frames: list[ReplayFrame] = []
    for path in paths:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as fh:
            for line in fh:
                line = line.rstrip(b"\r\n")
                head, sep, frame = line.partition(b" ")
                if not sep or not frame.startswith(b'{"stream":"'):
                    continue  # REST snapshot or junk
                stream = frame[11: frame.index(b'"', 11)].decode()
                symbol = trade = None
                if stream.endswith("@trade"):
                    data = orjson.loads(frame)["data"]
                    symbol = data["s"]
                    trade = Trade(data["t"], data["p"], data["q"], data["T"], data["m"])
                frames.append(ReplayFrame(int(head), stream, frame, symbol, trade))
    frames.sort(key=lambda f: f.recv_ns)  # stable: equal stamps keep file order
    return frames


# --------------------------------------------------------------------------------------------------
# Exchange server
# --------------------------------------------------------------------------------------------------


class _Client:
    """Server-side state of one WebSocket connection."""

    __slots__ = ("ws", "streams", "pending", "pending_frames", "wake", "connected_at")

    def __init__(self, ws: ServerConnection, streams: Iterable[str]) -> None:
        """Register the streams requested in the URL."""
        self.ws = ws
        self.streams: dict[str, None] = dict.fromkeys(streams)  # ordered set
        self.pending: collections.deque[list[bytes]] = collections.deque()
        self.pending_frames = 0
        self.wake = asyncio.Event()
        self.connected_at = time.monotonic()

    def enqueue(self, payloads: list[bytes]) -> None:
        """Queue text-frame payloads for the writer task."""
        self.enqueue_wire([wire_text_frame(p) for p in payloads])

    def enqueue_wire(self, frames: list[bytes]) -> None:
        """Queue already-framed WebSocket text frames for the writer task."""
        if frames:
            self.pending.append(frames)
            self.pending_frames += len(frames)
            self.wake.set()


class _History:
    """Trades of one symbol in id order, trimmed to a maximum length."""

    def __init__(self, limit: int) -> None:
        """Empty history keeping at most ``limit`` trades."""
        self.trades: list[Trade] = []
        self.limit = limit

    def append(self, trade: Trade) -> None:
        """Add a trade, dropping the oldest quarter when over the limit."""
        self.trades.append(trade)
        if len(self.trades) > self.limit + self.limit // 4:
            del self.trades[: len(self.trades) - self.limit]

    def from_id(self, from_id: int, limit: int) -> list[Trade]:
        """Up to ``limit`` trades with id >= from_id."""
        start = bisect.bisect_left(self.trades, from_id, key=lambda t: t.id)
        return self.trades[start: start + limit]

    def latest(self, limit: int) -> list[Trade]:
        """The most recent ``limit`` trades, oldest first."""
        return self.trades[-limit:]


class BinanceError(Exception):
    """A REST error rendered as Binance's ``{"code":..,"msg":..}`` with an HTTP status."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        """Remember status, Binance code and message."""
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class DemoExchange:
    """Binance-compatible spot trade streams and REST on one local port, with fault injection."""

    def __init__(
        self,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        seed: int = DEFAULT_SEED,
        rate: float = DEFAULT_RATE,
        mode: str | None = None,
        replay_paths: Sequence[str | Path] = (),
        speed: float = 1.0,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        max_trades: int | None = None,
        start_paused: bool = False,
        history_seconds: float = 0.0,
        wall_clock_times: bool = False,
        start_time_ms: int | None = None,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
        max_connection_age: float | None = DEFAULT_MAX_CONNECTION_AGE,
        rest_weight_limit: int | None = None,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        pregenerate: bool = False,
    ) -> None:
        """Configure the exchange; nothing runs until start() / start_in_thread().

        ``pregenerate`` (synthetic, speed 0, max_trades): build all frames in start(), so that streaming them
        costs the machine only the sending -- for benchmarks, where the exchange shares the CPU with the client
        under test (Binance's servers do not).
        """
        self.mode = mode or ("replay" if replay_paths else "synthetic")
        if self.mode not in ("synthetic", "replay"):
            raise ValueError(f"mode must be 'synthetic' or 'replay', not {self.mode!r}")
        if self.mode == "replay" and not replay_paths:
            raise ValueError("replay mode needs replay_paths")
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = as fast as possible)")
        if max_trades is not None and max_trades <= 0:
            raise ValueError("max_trades must be > 0")
        if pregenerate and (speed != 0 or max_trades is None or (mode or "synthetic") != "synthetic" or replay_paths):
            raise ValueError("pregenerate needs synthetic mode, speed 0 and max_trades")
        self.pregenerate = pregenerate
        self._pregenerated: list[tuple[str, bytes, str, Trade]] = []
        self._pregenerated_sent = 0
        self.seed, self.rate, self.speed = seed, rate, speed
        self.host, self.port = host, port
        self.max_trades = max_trades
        self.history_seconds = history_seconds
        self.wall_clock_times = wall_clock_times
        self.start_time_ms = start_time_ms
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.max_connection_age = max_connection_age
        self.rest_weight_limit = rest_weight_limit
        self._replay: list[ReplayFrame] = []
        self._market: SyntheticMarket | None = None
        if self.mode == "replay":
            self._replay = load_capture(replay_paths)
            found = dict.fromkeys(f.symbol for f in self._replay if f.symbol)
            self.symbols = [s for s in found]
            if not self.symbols:
                raise ValueError("replay files hold no trade frames")
        else:
            self.symbols = [s.upper() for s in symbols]
            if not self.symbols:
                raise ValueError("at least one symbol is required")
        self.specs = {s: spec_for(s, i) for i, s in enumerate(self.symbols)}
        self._histories = {s: _History(history_limit) for s in self.symbols}
        self._stream_symbol = {f"{s.lower()}@trade": s for s in self.symbols}
        # Counters.
        self.trades_generated: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self.frames_sent = 0
        self.malformed_sent = 0
        self.connections_accepted = 0
        self.rest_calls = 0
        # Fault-injection state.
        self._withheld: dict[str, int] = {}
        self._legacy_next = 0
        self._reconnect_overlap = 0
        self._forced_429: tuple[int, int] = (0, 1)  # (remaining calls, retry-after seconds)
        self._recent: dict[str, collections.deque[bytes]] = collections.defaultdict(
            lambda: collections.deque(maxlen=RECENT_FRAMES_PER_STREAM))
        self._recent_all: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=RECENT_FRAMES_PER_STREAM)
        self._weights: collections.deque[tuple[float, int]] = collections.deque()
        # Runtime.
        self._start_paused = start_paused
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._total_trades = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def ws_url(self) -> str:
        """Base WebSocket URL (append ``/stream?streams=...``)."""
        return f"ws://{self._url_host()}:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base REST URL (append ``/api/v3/...``)."""
        return f"http://{self._url_host()}:{self.port}"

    def _url_host(self) -> str:
        """Host part for URLs (IPv6 literals in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    async def start(self) -> None:
        """Bind the port, pre-generate optional history and start the feed."""
        self._loop = asyncio.get_running_loop()
        self._running = asyncio.Event()
        self._drained = asyncio.Event()
        if not self._start_paused:
            self._running.set()
        if self.mode == "synthetic":
            start_ms = self.start_time_ms
            if start_ms is None:
                start_ms = now_ms() - int(self.history_seconds * 1000)
            self._market = SyntheticMarket(self.symbols, self.seed, self.rate, start_ms)
            if self.history_seconds > 0:
                backlog = self._market.generate_until(self.history_seconds)
                if self.max_trades is not None:
                    backlog = backlog[: self.max_trades]
                self._publish([(f"{s.lower()}@trade", b"", s, t) for s, t, _ in backlog], send=False)
                logger.info("pre-generated %d trades of history (%.0f s)", len(backlog), self.history_seconds)
                if self.start_time_ms is None:  # generation took a while: keep live T on the wall clock
                    self._market.start_ms = now_ms() - int(self._market.sim_time * 1000)
            if self.pregenerate:
                assert self.max_trades is not None
                trades = self._market.generate_count(self.max_trades, now_ms() if self.wall_clock_times else None)
                self._pregenerated = [(f"{s.lower()}@trade", encode_trade_frame(s, t, e), s, t)
                                      for s, t, e in trades[: self.max_trades]]
                logger.info("pre-generated %d frames", len(self._pregenerated))
        self._server = await serve(
            self._handle, self.host, self.port,
            process_request=self._process_request,
            compression=None,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            max_queue=None,
            logger=logging.getLogger(f"{__name__}.ws"),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        feed = self._feed_synthetic() if self.mode == "synthetic" else self._feed_replay()
        self._feed_task = asyncio.create_task(feed)
        logger.info("demo exchange listening on %s (mode=%s, speed=%s)", self.ws_url, self.mode, self.speed)

    async def stop(self) -> None:
        """Stop the feed, close all connections (1001) and release the port."""
        if self._feed_task is not None:
            self._feed_task.cancel()
            await asyncio.gather(self._feed_task, return_exceptions=True)
            self._feed_task = None
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        logger.info("demo exchange stopped")

    def start_in_thread(self, timeout: float = 30.0) -> "DemoExchange":
        """Run the exchange on its own event loop in a daemon thread; returns once listening."""
        ready = concurrent.futures.Future()

        def runner() -> None:
            """Thread body: start, serve until stopped."""
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # surface bind errors etc. to the caller
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=runner, name="demo-exchange", daemon=True)
        self._thread.start()
        ready.result(timeout)
        return self

    def stop_in_thread(self, timeout: float = 10.0) -> None:
        """Stop an exchange started with start_in_thread() and join its thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> "DemoExchange":
        """Context manager form of start_in_thread()."""
        return self.start_in_thread()

    def __exit__(self, *exc_info: object) -> None:
        """Context manager form of stop_in_thread()."""
        self.stop_in_thread()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the exchange's loop (directly if already there) and return its result."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn(*args)
        try:
            if asyncio.get_running_loop() is loop:
                return fn(*args)
        except RuntimeError:
            pass
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            """Execute on the loop and hand back the outcome."""
            try:
                result.set_result(fn(*args))
            except BaseException as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return result.result(timeout=10)

    def _spawn(self, coro: Any) -> None:
        """Start a tracked background task."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- control & inspection

    def pause(self) -> None:
        """Pause trade generation / replay."""
        self._call(lambda: self._running and self._running.clear())

    def resume(self) -> None:
        """Resume trade generation / replay."""
        self._call(lambda: self._running and self._running.set())

    @property
    def done(self) -> bool:
        """True once max_trades were produced or the replay ended."""
        return self._done.is_set()

    def wait_done(self, timeout: float = 30.0) -> bool:
        """Block (thread mode) until done; returns False on timeout."""
        return self._done.wait(timeout)

    def wait_for_clients(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block (thread mode) until at least ``count`` WebSocket clients are registered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self._clients) >= count:
                return True
            time.sleep(0.005)
        return False

    def history(self, symbol: str) -> list[Trade]:
        """All trades generated/replayed so far for ``symbol`` (within history_limit), id order."""
        return self._call(lambda: list(self._histories[symbol.upper()].trades))

    def stats(self) -> dict[str, Any]:
        """Counters: trades per symbol, frames sent, malformed frames, connections, REST calls."""
        return self._call(lambda: {
            "trades_generated": dict(self.trades_generated),
            "frames_sent": self.frames_sent,
            "malformed_sent": self.malformed_sent,
            "connections_accepted": self.connections_accepted,
            "connections_open": len(self._clients),
            "rest_calls": self.rest_calls,
        })

    # ---------------------------------------------------------------- fault injection

    def drop_connections(self) -> int:
        """Abort every WebSocket connection at TCP level (no close frame); returns how many."""
        def act() -> int:
            clients = list(self._clients)
            for client in clients:
                client.ws.transport.abort()
            return len(clients)
        return self._call(act)

    def server_shutdown(self, grace: float = DEFAULT_SHUTDOWN_GRACE) -> int:
        """Send ``!serverShutdown`` to every client, then close them (1001) after ``grace`` seconds."""
        def act() -> int:
            frame = orjson.dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": now_ms()}})
            clients = list(self._clients)
            for client in clients:
                client.enqueue([frame])
            self._spawn(self._close_later(clients, grace, 1001, "server shutdown"))
            return len(clients)
        return self._call(act)

    async def _close_later(self, clients: list[_Client], delay: float, code: int, reason: str) -> None:
        """Close the given clients after a delay."""
        await asyncio.sleep(delay)
        await asyncio.gather(*(c.ws.close(code, reason) for c in clients), return_exceptions=True)

    def send_malformed(self, count: int, kinds: Sequence[str] | None = None) -> int:
        """Send ``count`` invalid trade frames (cycling ``kinds``) to each client on its first trade stream.

        Malformed frames reuse the id of the symbol's latest real trade, so an ingester that wrongly stores
        them collides with (rather than invents) an id; they never enter history.
        """
        kinds = list(kinds or MALFORMED_KINDS)
        unknown = set(kinds) - set(MALFORMED_KINDS)
        if unknown:
            raise ValueError(f"unknown malformed kinds: {sorted(unknown)}")

        def act() -> int:
            sent = 0
            for client in list(self._clients):
                symbol = next((self._stream_symbol[s] for s in client.streams if s in self._stream_symbol), None)
                if symbol is None:
                    continue
                frames = [self._malformed_frame(symbol, kinds[k % len(kinds)]) for k in range(count)]
                client.enqueue(frames)
                sent += len(frames)
            self.malformed_sent += sent
            return sent
        return self._call(act)

    def _malformed_frame(self, symbol: str, kind: str) -> bytes:
        """Build one malformed frame of the given kind for ``symbol``."""
        trades = self._histories[symbol].trades
        last = trades[-1] if trades else Trade(self.specs[symbol].first_trade_id - 1, "1.00000000", "1.00000000",
                                               now_ms(), False)
        stream = f"{symbol.lower()}@trade"
        data: dict[str, Any] = {"e": "trade", "E": last.time + EVENT_DELAY_MS, "s": symbol, "t": last.id,
                                "p": last.price, "q": last.qty, "T": last.time, "m": last.is_buyer_maker, "M": True}
        if kind == "missing_key":
            del data["p"]
        elif kind == "wrong_type":
            data["t"] = "not-a-number"
        elif kind == "negative_price":
            data["p"] = "-" + last.price
        elif kind == "zero_qty":
            data["q"] = "0.00000000"
        elif kind == "nan_price":
            data["p"] = "NaN"
        elif kind == "inf_qty":
            data["q"] = "inf"
        elif kind == "zero_time":
            data["T"] = 0
        elif kind == "future_time":
            data["T"] = YEAR_3000_MS
        elif kind == "unknown_stream":
            stream, data["s"] = "xyzusdt@trade", "XYZUSDT"
        frame = orjson.dumps({"stream": stream, "data": data})
        return frame[:-7] if kind == "bad_json" else frame

    def send_duplicates(self, count: int) -> int:
        """Re-send the last ``count`` trade frames (per client, of its streams); returns frames queued."""
        def act() -> int:
            sent = 0
            for client in list(self._clients):
                frames = [f for s, f in self._recent_all if s in client.streams][-count:]
                client.enqueue(frames)
                sent += len(frames)
            return sent
        return self._call(act)

    def withhold(self, symbol: str, count: int) -> None:
        """Keep the next ``count`` trades of ``symbol`` off the socket (they still enter history/REST)."""
        self._call(lambda: self._withheld.__setitem__(symbol.upper(), self._withheld.get(symbol.upper(), 0) + count))

    def add_legacy_fields(self, count: int) -> None:
        """Give the next ``count`` trade frames the old ``b``/``a`` order-id keys (still valid frames)."""
        def act() -> None:
            self._legacy_next += count
        self._call(act)

    def set_reconnect_overlap(self, count: int) -> None:
        """New connections first receive the last ``count`` sent frames of each subscribed trade stream."""
        def act() -> None:
            self._reconnect_overlap = count
        self._call(act)

    def force_rate_limit(self, calls: int, retry_after: int = 1) -> None:
        """Answer the next ``calls`` REST requests with HTTP 429 and ``Retry-After: retry_after``."""
        def act() -> None:
            self._forced_429 = (calls, retry_after)
        self._call(act)

    # ---------------------------------------------------------------- feed

    def _publish(self, items: list[tuple[str, bytes, str | None, Trade | None]], send: bool = True) -> None:
        """Record trades in history and fan frames out to subscribed clients.

        ``items`` are (stream, frame, symbol, trade); symbol/trade are None for non-trade frames.
        """
        out: list[tuple[str, bytes]] = []
        withheld = self._withheld
        for stream, frame, symbol, trade in items:
            if trade is not None and symbol is not None:
                self._histories[symbol].append(trade)
                self.trades_generated[symbol] += 1
                self._total_trades += 1
                if withheld and withheld.get(symbol, 0) > 0:
                    withheld[symbol] -= 1
                    continue
                if self._legacy_next > 0:
                    self._legacy_next -= 1
                    frame = frame.replace(b',"T":', b',"b":%d,"a":%d,"T":' % (trade.id * 2, trade.id * 2 + 1), 1)
            if not send:
                continue
            self._recent[stream].append(frame)
            self._recent_all.append((stream, frame))
            out.append((stream, wire_text_frame(frame)))
        if not out:
            return
        for client in list(self._clients):
            streams = client.streams
            client.enqueue_wire([f for s, f in out if s in streams])
            if client.pending_frames > MAX_PENDING_FRAMES and self.speed != 0:
                logger.warning("disconnecting slow client %s (%d frames queued)",
                               client.ws.remote_address, client.pending_frames)
                client.pending.clear()
                client.pending_frames = 0
                client.ws.transport.abort()

    def _remaining(self) -> int | None:
        """Trades still allowed before max_trades, or None when unlimited."""
        return None if self.max_trades is None else self.max_trades - self._total_trades

    def _finish(self) -> None:
        """Mark the feed as finished."""
        self._done.set()
        logger.info("feed finished after %d trades", self._total_trades)

    async def _wait_running(self) -> bool:
        """Wait while paused; returns True if a pause happened."""
        assert self._running is not None
        if self._running.is_set():
            return False
        await self._running.wait()
        return True

    async def _wait_fast_ready(self) -> None:
        """As-fast-as-possible mode: wait for a client and for the slowest client to drain."""
        assert self._drained is not None
        while not self._clients or any(c.pending_frames > FAST_HIGH_WATER_FRAMES for c in self._clients):
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), 0.05)
            except TimeoutError:
                pass

    async def _feed_synthetic(self) -> None:
        """Generate synthetic trades (paced by ``speed``, or as fast as clients take them when speed=0)."""
        market = self._market
        assert market is not None
        loop = asyncio.get_running_loop()
        wall0, sim0 = loop.time(), market.sim_time
        if self._remaining() is not None and self._remaining() <= 0:
            self._finish()
            return
        while True:
            if await self._wait_running():
                wall0, sim0 = loop.time(), market.sim_time
                if self.speed == 1 and not self.wall_clock_times:
                    market.start_ms = now_ms() - int(market.sim_time * 1000)  # keep T close to wall clock
            if self.speed == 0:
                await self._wait_fast_ready()
                if not self._running.is_set():  # type: ignore[union-attr]
                    continue
                if self.pregenerate:
                    start = self._pregenerated_sent
                    self._publish(self._pregenerated[start:start + FAST_BATCH_TRADES])
                    self._pregenerated_sent = min(start + FAST_BATCH_TRADES, len(self._pregenerated))
                    if self._pregenerated_sent == len(self._pregenerated):
                        self._finish()
                        return
                    await asyncio.sleep(0)
                    continue
                batch = market.generate_count(FAST_BATCH_TRADES, now_ms() if self.wall_clock_times else None)
            else:
                await asyncio.sleep(PACED_TICK_SECONDS)
                if not self._running.is_set():  # type: ignore[union-attr]
                    continue
                target = sim0 + (loop.time() - wall0) * self.speed
                batch = market.generate_until(target, now_ms() if self.wall_clock_times else None)
            remaining = self._remaining()
            if remaining is not None:
                batch = batch[:remaining]
            self._publish([(f"{s.lower()}@trade", encode_trade_frame(s, t, e), s, t) for s, t, e in batch])
            if remaining is not None and len(batch) >= remaining:
                self._finish()
                return
            if self.speed == 0:
                await asyncio.sleep(0)

    async def _feed_replay(self) -> None:
        """Replay captured frames in arrival order at ``speed`` x (0 = as fast as clients take them)."""
        loop = asyncio.get_running_loop()
        frames = self._replay
        if not frames:
            self._finish()
            return
        first_ns = frames[0].recv_ns
        wall0, offset_ns = loop.time(), 0
        i = 0
        while i < len(frames):
            if await self._wait_running():
                wall0, offset_ns = loop.time(), frames[i].recv_ns - first_ns
            if self.speed == 0:
                await self._wait_fast_ready()
                if not self._running.is_set():  # type: ignore[union-attr]
                    continue
                j = min(i + FAST_BATCH_TRADES, len(frames))
            else:
                due_ns = first_ns + offset_ns + int((loop.time() - wall0) * self.speed * 1e9)
                j = i
                while j < len(frames) and frames[j].recv_ns <= due_ns:
                    j += 1
                if j == i:
                    wait = (frames[i].recv_ns - due_ns) / 1e9 / self.speed
                    await asyncio.sleep(min(max(wait, 0.001), PACED_TICK_SECONDS * 10))
                    continue
            chunk = frames[i:j]
            remaining = self._remaining()
            if remaining is not None:
                cut = 0
                for k, f in enumerate(chunk):
                    if f.trade is not None:
                        cut += 1
                        if cut == remaining:
                            chunk = chunk[: k + 1]
                            break
            self._publish([(f.stream, f.frame, f.symbol, f.trade) for f in chunk])
            i += len(chunk)
            if remaining is not None and self._remaining() == 0:
                break
            await asyncio.sleep(0)
        self._finish()

    # ---------------------------------------------------------------- WebSocket side

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Answer REST GETs and bad stream URLs; let valid ``/stream`` requests upgrade."""
        url = urlsplit(request.path)
        if url.path.startswith("/api/"):
            return self._rest(url.path, url.query)
        if url.path == "/stream":
            try:
                _parse_streams(url.query)
            except BinanceError as err:
                return _json_response(err.status, {"code": err.code, "msg": err.msg})
            return None
        return _json_response(404, {"code": -1000, "msg": f"Unknown path {url.path}"})

    async def _handle(self, ws: ServerConnection) -> None:
        """Serve one WebSocket connection: register, write frames, read control messages."""
        assert ws.request is not None
        client = _Client(ws, _parse_streams(urlsplit(ws.request.path).query))
        self.connections_accepted += 1
        if self._reconnect_overlap:
            overlap = [f for s in client.streams for f in list(self._recent.get(s, ()))[-self._reconnect_overlap:]]
            client.enqueue(overlap)
        self._clients.add(client)
        logger.info("client %s connected, streams=%s", ws.remote_address, list(client.streams))
        writer = asyncio.create_task(self._writer(client))
        age_timer = None
        if self.max_connection_age is not None:
            age_timer = asyncio.get_running_loop().call_later(
                self.max_connection_age, lambda: self._spawn(ws.close(1000, "max connection age")))
        try:
            async for message in ws:
                self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            writer.cancel()
            if age_timer is not None:
                age_timer.cancel()
            logger.info("client %s disconnected (code=%s)", ws.remote_address, ws.close_code)

    async def _writer(self, client: _Client) -> None:
        """Drain a client's queue to its socket, in chunks, honouring flow control."""
        ws = client.ws
        assert self._drained is not None
        try:
            while True:
                if not client.pending:
                    client.wake.clear()
                    self._drained.set()
                    await client.wake.wait()
                    continue
                batch = client.pending.popleft()
                client.pending_frames -= len(batch)
                for k in range(0, len(batch), SEND_CHUNK_FRAMES):
                    chunk = batch[k: k + SEND_CHUNK_FRAMES]
                    await _send_wire_frames(ws, chunk)
                    self.frames_sent += len(chunk)
                self._drained.set()
        except (ConnectionClosed, ConnectionError):
            pass

    def _on_message(self, client: _Client, message: str | bytes) -> None:
        """Handle SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS like Binance."""
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            client.enqueue([orjson.dumps({"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}})])
            return
        if not isinstance(request, dict):
            client.enqueue([orjson.dumps({"error": {"code": 2, "msg": "Invalid request"}})])
            return
        req_id, method, params = request.get("id"), request.get("method"), request.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) and STREAM_NAME_RE.match(p)
                                                       for p in params):
                reply: dict[str, Any] = {"error": {"code": 2, "msg": "Invalid request: invalid stream name"},
                                         "id": req_id}
            else:
                for name in params:
                    if method == "SUBSCRIBE":
                        client.streams[name] = None
                    else:
                        client.streams.pop(name, None)
                reply = {"result": None, "id": req_id}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": list(client.streams), "id": req_id}
        else:
            reply = {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": req_id}
        client.enqueue([orjson.dumps(reply)])

    # ---------------------------------------------------------------- REST side

    def _rest(self, path: str, query: str) -> Response:
        """Dispatch one REST GET with weight accounting and rate limiting."""
        self.rest_calls += 1
        weight = ENDPOINT_WEIGHTS.get(path)
        if weight is None:
            return _json_response(404, {"code": -1000, "msg": f"Unknown endpoint {path}"})
        now = time.monotonic()
        while self._weights and self._weights[0][0] <= now - REST_WINDOW_SECONDS:
            self._weights.popleft()
        used = sum(w for _, w in self._weights)
        calls, retry_after = self._forced_429
        limit = self.rest_weight_limit
        if calls > 0 or (limit is not None and used + weight > limit):
            if calls > 0:
                self._forced_429 = (calls - 1, retry_after)
            else:
                excess, freed, oldest = used + weight - limit, 0, now  # type: ignore[operator]
                for stamp, w in self._weights:
                    freed += w
                    oldest = stamp
                    if freed >= excess:
                        break
                retry_after = max(1, math.ceil(oldest + REST_WINDOW_SECONDS - now))
            msg = (f"Too much request weight used; current limit is {limit or BINANCE_WEIGHT_LIMIT} request weight "
                   "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.")
            return _json_response(429, {"code": -1003, "msg": msg},
                                  {"Retry-After": str(retry_after), "X-MBX-USED-WEIGHT-1M": str(used)})
        self._weights.append((now, weight))
        headers = {"X-MBX-USED-WEIGHT-1M": str(used + weight)}
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            if path in ("/api/v3/historicalTrades", "/api/v3/trades"):
                body: Any = self._rest_trades(params, allow_from_id=path.endswith("historicalTrades"))
            elif path == "/api/v3/exchangeInfo":
                body = self._rest_exchange_info(params)
            elif path == "/api/v3/time":
                body = {"serverTime": now_ms()}
            else:
                body = {}
        except BinanceError as err:
            return _json_response(err.status, {"code": err.code, "msg": err.msg}, headers)
        return _json_response(200, body, headers)

    def _symbol_param(self, params: dict[str, str]) -> str:
        """Validate the mandatory ``symbol`` parameter."""
        symbol = params.get("symbol", "")
        if not symbol:
            raise BinanceError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if symbol.upper() not in self._histories:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return symbol.upper()

    def _rest_trades(self, params: dict[str, str], allow_from_id: bool) -> list[dict[str, Any]]:
        """historicalTrades / trades: up to ``limit`` trades from ``fromId`` (or the latest)."""
        symbol = self._symbol_param(params)
        limit = _int_param(params, "limit", HISTORICAL_TRADES_DEFAULT_LIMIT)
        if not 1 <= limit <= HISTORICAL_TRADES_MAX_LIMIT:
            raise BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        history = self._histories[symbol]
        if allow_from_id and params.get("fromId") is not None:
            trades = history.from_id(_int_param(params, "fromId", 0), limit)
        else:
            trades = history.latest(limit)
        return [{"id": t.id, "price": t.price, "qty": t.qty,
                 "quoteQty": format_e8(parse_e8(t.price) * parse_e8(t.qty) // E8),
                 "time": t.time, "isBuyerMaker": t.is_buyer_maker, "isBestMatch": True} for t in trades]

    def _rest_exchange_info(self, params: dict[str, str]) -> dict[str, Any]:
        """exchangeInfo for all symbols (or the one in ``symbol``)."""
        symbols = [self._symbol_param(params)] if params.get("symbol") is not None else self.symbols
        return {
            "timezone": "UTC",
            "serverTime": now_ms(),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                            "limit": self.rest_weight_limit or BINANCE_WEIGHT_LIMIT}],
            "exchangeFilters": [],
            "symbols": [_symbol_info(self.specs[s]) for s in symbols],
        }


def _symbol_info(spec: SymbolSpec) -> dict[str, Any]:
    """exchangeInfo entry for one symbol."""
    return {
        "symbol": spec.symbol, "status": "TRADING",
        "baseAsset": spec.base, "baseAssetPrecision": 8,
        "quoteAsset": spec.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": format_e8(spec.tick_e8), "maxPrice": "1000000.00000000",
             "tickSize": format_e8(spec.tick_e8)},
            {"filterType": "LOT_SIZE", "minQty": format_e8(spec.lot_e8), "maxQty": "9000.00000000",
             "stepSize": format_e8(spec.lot_e8)},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
    }


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    """Parse a non-negative integer query parameter the way Binance validates it."""
    raw = params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,20}", raw):
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                                       "legal range is '^[0-9]{1,20}$'.")
    return int(raw)


def _parse_streams(query: str) -> list[str]:
    """Stream names from ``streams=a/b/c``; HTTP 400 for malformed names."""
    raw = parse_qs(query, keep_blank_values=True).get("streams", [""])[0]
    names = [n for n in raw.split("/") if n]
    bad = [n for n in names if not STREAM_NAME_RE.match(n)]
    if bad:
        raise BinanceError(400, -1100, f"Invalid stream name(s): {', '.join(bad)}")
    return names


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """Plain HTTP response with a JSON body (the connection closes afterwards)."""
    payload = orjson.dumps(body)
    all_headers = Headers({"Content-Type": "application/json;charset=UTF-8", "Content-Length": str(len(payload)),
                           "Connection": "close"})
    for key, value in (headers or {}).items():
        all_headers[key] = value
    return Response(status, http.HTTPStatus(status).phrase, all_headers, payload)


async def _send_wire_frames(ws: ServerConnection, frames: list[bytes]) -> None:
    """Write pre-framed text frames in one transport write, then honour websockets' flow control.

    Bypassing ``ws.send`` per frame is what makes >40k frames/s possible; it is safe because every data
    frame of a connection goes through this one writer task and each write holds whole frames.
    """
    if ws.protocol.state is not State.OPEN:
        raise ConnectionClosed(None, None)
    ws.transport.write(b"".join(frames))
    await ws.drain()


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


class _OneLineParser(argparse.ArgumentParser):
    """ArgumentParser that reports errors as a single line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print one line naming the option and exit 2."""
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _positive_float(text: str) -> float:
    """argparse type: float > 0."""
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    """argparse type: finite float >= 0."""
    value = float(text)
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: int > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    """argparse type: TCP port 0..65535."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {text!r}")
    return value


def _symbols(text: str) -> list[str]:
    """argparse type: comma-separated symbols."""
    symbols = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not symbols or not all(re.fullmatch(r"[A-Z0-9]{2,20}", s) for s in symbols):
        raise argparse.ArgumentTypeError(f"expected comma-separated symbols like btcusdt,ethusdt, got {text!r}")
    return symbols


def _existing_file(text: str) -> Path:
    """argparse type: a readable file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = _OneLineParser(prog="demo_exchange.py", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=DEFAULT_HOST, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port, 0 = ephemeral (default 9443)")
    p.add_argument("--symbols", type=_symbols, default=list(DEFAULT_SYMBOLS), help="synthetic symbols, comma list")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--rate", type=_positive_float, default=DEFAULT_RATE, help="synthetic trades/s, all symbols")
    p.add_argument("--replay", type=_existing_file, nargs="+", metavar="FILE", help="capture .gz files to replay")
    p.add_argument("--speed", type=_non_negative_float, default=1.0, help="1 = real time, N = Nx, 0 = max speed")
    p.add_argument("--max-trades", type=_positive_int, help="stop producing after N trades")
    p.add_argument("--history-seconds", type=_non_negative_float, default=0.0,
                   help="pre-generate this much synthetic history for historicalTrades")
    p.add_argument("--wall-clock-times", action="store_true", help="stamp E/T with wall-clock now (latency bench)")
    p.add_argument("--pregenerate", action="store_true",
                   help="with --speed 0 --max-trades N: build the N frames before serving (benchmarks)")
    p.add_argument("--ping-interval", type=_positive_float, default=DEFAULT_PING_INTERVAL)
    p.add_argument("--ping-timeout", type=_positive_float, default=DEFAULT_PING_TIMEOUT)
    p.add_argument("--max-connection-age", type=_positive_float, default=DEFAULT_MAX_CONNECTION_AGE,
                   help="seconds before the server closes a connection (Binance: 86400)")
    p.add_argument("--rest-weight-limit", type=_positive_int, help="answer 429 above this weight per minute")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


async def _serve(exchange: DemoExchange) -> None:
    """Run until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await exchange.start()
    print(f"demo exchange ready: BINANCE_WS_URL={exchange.ws_url} BINANCE_REST_URL={exchange.rest_url}", flush=True)
    await stop.wait()
    await exchange.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        exchange = DemoExchange(
            symbols=args.symbols, seed=args.seed, rate=args.rate, replay_paths=args.replay or (),
            speed=args.speed, host=args.host, port=args.port, max_trades=args.max_trades,
            history_seconds=args.history_seconds, wall_clock_times=args.wall_clock_times,
            ping_interval=args.ping_interval, ping_timeout=args.ping_timeout,
            max_connection_age=args.max_connection_age, rest_weight_limit=args.rest_weight_limit,
            pregenerate=args.pregenerate,
        )
        asyncio.run(_serve(exchange))
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"demo_exchange.py: error: {exc}\n")
        return 2 if isinstance(exc, ValueError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
