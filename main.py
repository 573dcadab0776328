"""Ingester: every Binance trade of the configured symbols into PostgreSQL, once.

    python main.py              stream trades (one combined-stream WebSocket) into the `ticks` table

Tasks, all in one asyncio loop:
  stream  -> reads frames (one socket, reconnects with capped exponential backoff + full jitter; hands over
             to a fresh socket before Binance's 24 h cut and on serverShutdown), parses, appends to the buffer
  writer  -> flushes the buffer at BATCH_ROWS or BATCH_SECONDS with COPY + ON CONFLICT DO NOTHING, so a
             slow database never stalls the socket; retries through database outages
  repair  -> fills trade-id gaps from REST historicalTrades, within Binance's request-weight budget
  health  -> writes per-symbol feed health every second
"""
from __future__ import annotations

import asyncio
import logging
import math
import random
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlparse

import asyncpg
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

import database
from settings import EXIT_BAD_SETTINGS, Settings, configure_logging, load_settings_or_exit

log = logging.getLogger("ingester")

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROS_PER_MS = 1000
MIN_TRADE_TIME_MS = 1_483_228_800_000  # 2017-01-01: Binance did not exist before
MAX_TRADE_ID = 2**63 - 1  # ticks.trade_id is a bigint
MAX_CLOCK_AHEAD_MS = 86_400_000  # a trade stamped more than a day in the future is absurd
WS_PING_INTERVAL_SECONDS = 20.0
WS_OPEN_TIMEOUT_SECONDS = 10.0
WS_MAX_QUEUE_FRAMES = 4096
WS_MAX_FRAME_BYTES = 1 << 20
# The reader hands the event loop back every this many frames: frames queued in websockets are returned by
# recv() without a suspension, and a turn of thousands of frames would starve the writer's COPY (its socket
# writes and the server's replies are serviced only between turns).
READER_YIELD_EVERY_FRAMES = 256
WRITER_SESSION_SETTINGS = {"work_mem": "64MB"}  # the bar fold sorts each batch: in memory, not on disk
REST_TRADES_LIMIT = 1000  # historicalTrades page size (Binance's maximum)
REST_TRADES_WEIGHT = 25
REST_TIMEOUT_SECONDS = 10.0
GAP_GRACE_SECONDS = 1.0  # an id missing for this long is a gap (overlapping sockets deliver late ids)
SHUTDOWN_FLUSH_SECONDS = 4.0
LATENCY_SAMPLES = 20_000  # enough for a stable p99; bounded memory
RETENTION_INTERVAL_SECONDS = 3600.0


class MalformedFrame(ValueError):
    """A frame or REST record that must not be stored; `kind` names the defect for counting."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


# ---------------------------------------------------------------------------------------------------
# Parsing (pure)
# ---------------------------------------------------------------------------------------------------
def _decimal(value: Any, name: str) -> float:
    """Binance decimal string -> float; must be finite and positive."""
    if not isinstance(value, str):
        raise MalformedFrame(f"bad_{name}", f"{name} is {type(value).__name__}, not a decimal string")
    try:
        number = float(value)
    except ValueError:
        raise MalformedFrame(f"bad_{name}", repr(value)) from None
    if not 0 < number < math.inf:
        raise MalformedFrame(f"bad_{name}", repr(value))
    return number


def _diagnose_trade(symbol: Any, trade_id: Any, price: Any, qty: Any, time_ms: Any, is_buyer_maker: Any,
                    now_ms: float) -> None:
    """Raise the MalformedFrame that names what is wrong with a trade the fast path refused."""
    if not isinstance(symbol, str) or not symbol:
        raise MalformedFrame("bad_symbol", repr(symbol))
    if type(trade_id) is not int or not 0 <= trade_id <= MAX_TRADE_ID:
        raise MalformedFrame("bad_trade_id", repr(trade_id))
    if type(time_ms) is not int or not MIN_TRADE_TIME_MS <= time_ms <= now_ms + MAX_CLOCK_AHEAD_MS:
        raise MalformedFrame("bad_time", repr(time_ms))
    if type(is_buyer_maker) is not bool:
        raise MalformedFrame("bad_is_buyer_maker", repr(is_buyer_maker))
    _decimal(price, "price")
    _decimal(qty, "qty")
    raise MalformedFrame("bad_trade", "refused")  # unreachable unless the fast path and this disagree


def make_tick_row(symbol: Any, trade_id: Any, price: Any, qty: Any, time_ms: Any, is_buyer_maker: Any,
                  now_ms: float) -> tuple:
    """Validate one trade's fields and return the staged row (symbol, trade_id, time_us, price, qty, m).

    Trade time stays an integer (µs since 1970): a datetime per trade costs more than the rest of the row.

    The common case is one chain of cheap checks (this runs for every trade); only a refused trade pays
    for `_diagnose_trade`, which names the defect.
    """
    if (type(trade_id) is int and type(time_ms) is int and type(is_buyer_maker) is bool
            and type(price) is str and type(qty) is str and type(symbol) is str and symbol
            and 0 <= trade_id <= MAX_TRADE_ID and MIN_TRADE_TIME_MS <= time_ms <= now_ms + MAX_CLOCK_AHEAD_MS):
        try:
            price_value, qty_value = float(price), float(qty)
        except ValueError:
            price_value = qty_value = math.nan
        if 0 < price_value < math.inf and 0 < qty_value < math.inf:  # NaN fails both comparisons
            return symbol, trade_id, time_ms * MICROS_PER_MS, price_value, qty_value, is_buyer_maker
    _diagnose_trade(symbol, trade_id, price, qty, time_ms, is_buyer_maker, now_ms)
    raise AssertionError("unreachable")


SHUTDOWN = "shutdown"  # parse_frame's answer to Binance's !serverShutdown notice


def parse_frame(raw: bytes | str, symbols: frozenset[str], now_ms: float) -> tuple | str | None:
    """Parse one combined-stream frame: a `ticks` row, SHUTDOWN, or None for frames that are not ours.

    Raises MalformedFrame for anything that must not be stored.
    """
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedFrame("bad_json") from None
    if type(message) is not dict:
        raise MalformedFrame("not_an_object")
    stream = message.get("stream")
    if stream is None:
        if "id" in message and ("result" in message or "error" in message):
            return None  # reply to SUBSCRIBE / LIST_SUBSCRIPTIONS
        raise MalformedFrame("no_stream")
    if type(stream) is not str or not stream.endswith("@trade"):
        return SHUTDOWN if stream == "!serverShutdown" else None  # bookTicker, depth, ... are not ours
    data = message.get("data")
    if type(data) is not dict:
        raise MalformedFrame("no_data")
    try:
        if data["e"] != "trade":
            raise MalformedFrame("bad_event_type", repr(data["e"]))
        row = make_tick_row(data["s"], data["t"], data["p"], data["q"], data["T"], data["m"], now_ms)
    except KeyError as missing:
        raise MalformedFrame("missing_key", str(missing)) from None
    if row[0] not in symbols:
        raise MalformedFrame("unexpected_symbol", row[0])
    return row


def parse_rest_trade(symbol: str, item: Any, now_ms: float) -> tuple:
    """One historicalTrades record -> `ticks` row."""
    if not isinstance(item, dict):
        raise MalformedFrame("rest_not_an_object")
    try:
        return make_tick_row(symbol, item["id"], item["price"], item["qty"], item["time"], item["isBuyerMaker"],
                             now_ms)
    except KeyError as missing:
        raise MalformedFrame("rest_missing_key", str(missing)) from None


def combined_stream_url(base_url: str, symbols: tuple[str, ...]) -> str:
    """wss://host:port + (BTCUSDT, ETHUSDT) -> wss://host:port/stream?streams=btcusdt@trade/ethusdt@trade"""
    return f"{base_url}/stream?streams=" + "/".join(f"{s.lower()}@trade" for s in symbols)


# ---------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------
class Backoff:
    """Capped exponential backoff with full jitter: delay = uniform(0, min(cap, base * 2**attempt))."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2 ** self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return delay

    def reset(self) -> None:
        self.attempt = 0


class RestWeightBudget:
    """Keeps REST calls under a request-weight budget per rolling minute, and honours Retry-After."""

    def __init__(self, weight_per_minute: int) -> None:
        self.limit = weight_per_minute
        self.spent: deque[tuple[float, int]] = deque()
        self.blocked_until = 0.0

    async def acquire(self, weight: int) -> None:
        while True:
            now = time.monotonic()
            while self.spent and now - self.spent[0][0] >= 60.0:
                self.spent.popleft()
            wait = self.blocked_until - now
            if wait <= 0 and sum(w for _, w in self.spent) + weight <= self.limit:
                self.spent.append((now, weight))
                return
            if wait <= 0:
                wait = 60.0 - (now - self.spent[0][0])
            await asyncio.sleep(max(wait, 0.05))

    def block_for(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)


def _http_get_json(url: str) -> tuple[int, dict[str, str], Any]:
    """Blocking GET (run in a thread); returns (status, headers, parsed JSON or None)."""
    request = urllib.request.Request(url, headers={"User-Agent": "pair-dashboard-ingester"})
    try:
        with urllib.request.urlopen(request, timeout=REST_TIMEOUT_SECONDS) as response:
            return response.status, dict(response.headers), orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers or {}), None


@dataclass
class SymbolStats:
    """Per-symbol counters published as feed health."""

    last_trade_id: int | None = None
    last_trade_us: int | None = None  # trade time of the newest stream trade, µs since 1970
    ticks_since_report: int = 0
    ticks_per_second: float = 0.0
    gaps_found: int = 0
    gaps_filled: int = 0
    trades_backfilled: int = 0
    open_gaps: list[list[int]] = field(default_factory=list)  # [first_id, last_id, detected_at]
    dropped: list[int] | None = None  # [min_id, max_id] dropped for lack of buffer space


# ---------------------------------------------------------------------------------------------------
# The ingester
# ---------------------------------------------------------------------------------------------------
class Ingester:
    """Binance combined stream -> buffer -> PostgreSQL, with gap repair and feed health."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self.settings = settings
        self.dsn = dsn
        self.symbols = frozenset(settings.symbols)
        self.stream_url = combined_stream_url(settings.binance_ws_url, settings.symbols)
        self.stats = {s: SymbolStats() for s in settings.symbols}
        self.buffer: list[tuple] = []
        self.buffer_times: list[float] = []  # monotonic receive time per buffered row
        self.rows_ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self.gap_found = asyncio.Event()
        self.db_up = True
        self.connected = False
        self.reconnects = 0
        self.malformed: Counter[str] = Counter()
        self.frames = 0
        self.rows_committed = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.rest_budget = RestWeightBudget(settings.rest_weight_per_minute)
        self.resume_ids: dict[str, int] = {}
        self.stop_deadline = math.inf  # set at shutdown: past it, a dead database no longer blocks exit
        self.batch_rows, self.max_buffer_rows = settings.batch_rows, settings.max_buffer_rows  # read per trade
        self.now_ms = time.time() * 1000  # wall clock for the "absurd timestamp" check, refreshed every second

    # ---- frames -----------------------------------------------------------------------------------
    def count_malformed(self, error: MalformedFrame, source: str) -> None:
        """Count a bad record; log the first of each kind (a flood must not flood the log)."""
        self.malformed[error.kind] += 1
        if self.malformed[error.kind] == 1:
            log.warning("malformed %s dropped (%s); further ones of this kind are only counted", source, error)

    def handle_frame(self, raw: bytes, received: float) -> bool:
        """Parse one frame (received at monotonic time `received`) into the buffer; return True when the
        server announced a shutdown.

        This runs for every trade, so the common case (the next id of its symbol) is kept to a few
        operations; anything else goes to track_trade_id.
        """
        self.frames += 1
        try:
            row = parse_frame(raw, self.symbols, self.now_ms)
        except MalformedFrame as error:
            self.count_malformed(error, "frame")
            return False
        if type(row) is not tuple:
            return row is SHUTDOWN
        stats = self.stats[row[0]]
        trade_id = row[1]
        if stats.last_trade_id == trade_id - 1:  # None (no id yet) never equals
            stats.last_trade_id = trade_id
        else:
            self.track_trade_id(stats, row[0], trade_id)
        stats.last_trade_us = row[2]
        stats.ticks_since_report += 1
        buffer = self.buffer
        if len(buffer) >= self.max_buffer_rows:  # the database is behind: REST refills these later
            stats.dropped = [min(stats.dropped[0], trade_id), max(stats.dropped[1], trade_id)] \
                if stats.dropped else [trade_id, trade_id]
            return False
        buffer.append(row)
        self.buffer_times.append(received)
        if len(buffer) == self.batch_rows:  # the writer swaps in an empty buffer, so each batch crosses once
            self.rows_ready.set()
        return False

    def accept_rest_row(self, row: tuple) -> None:
        """Append a REST (gap repair) row to the write buffer; the caller has waited for buffer space."""
        self.buffer.append(row)
        self.buffer_times.append(time.monotonic())
        if len(self.buffer) >= self.batch_rows:
            self.rows_ready.set()

    def track_trade_id(self, stats: SymbolStats, symbol: str, trade_id: int) -> None:
        """Ids are contiguous per symbol: a jump opens a gap; a late id closes part of one."""
        last = stats.last_trade_id
        if last is None:
            last = self.resume_ids.get(symbol)
            if last is not None and trade_id - last - 1 > self.settings.backfill_max:
                log.warning("%s: %d trades missed since the last run; backfilling the newest %d (BACKFILL_MAX)",
                            symbol, trade_id - last - 1, self.settings.backfill_max)
                last = trade_id - self.settings.backfill_max - 1
        if last is None or trade_id == last + 1:
            stats.last_trade_id = trade_id
        elif trade_id > last + 1:
            stats.open_gaps.append([last + 1, trade_id - 1, time.monotonic()])
            stats.last_trade_id = trade_id
            self.gap_found.set()
        elif stats.open_gaps:
            self.close_gap_id(stats, trade_id)

    @staticmethod
    def close_gap_id(stats: SymbolStats, trade_id: int) -> None:
        """A late id arrived (overlapping sockets): remove it from the open gaps."""
        for index, (first, last, detected) in enumerate(stats.open_gaps):
            if first <= trade_id <= last:
                pieces = [[first, trade_id - 1, detected], [trade_id + 1, last, detected]]
                stats.open_gaps[index:index + 1] = [p for p in pieces if p[0] <= p[1]]
                return

    # ---- stream -----------------------------------------------------------------------------------
    async def run_stream(self) -> None:
        """Keep one live socket; open the next one before dropping the old on serverShutdown or age."""
        backoff = Backoff(self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds)
        retiring: tuple[Any, asyncio.Task] | None = None
        failures = 0
        while not self.stopping.is_set():
            opened_at = time.monotonic()
            try:
                ws = await connect(self.stream_url, compression=None, open_timeout=WS_OPEN_TIMEOUT_SECONDS,
                                   ping_interval=WS_PING_INTERVAL_SECONDS, ping_timeout=WS_PING_INTERVAL_SECONDS,
                                   max_queue=WS_MAX_QUEUE_FRAMES, max_size=WS_MAX_FRAME_BYTES)
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
                failures += 1
                delay = backoff.next_delay()
                hint = " — no network? `python run_all.py --demo` runs offline" if failures == 1 else ""
                log.warning("cannot reach %s (%s); retrying in %.1f s%s", self.settings.binance_ws_url,
                            error.__class__.__name__, delay, hint)
                await self.sleep_unless_stopping(delay)
                continue
            log.info("connected to %s", self.settings.binance_ws_url)
            failures = 0
            self.connected = True
            handover = asyncio.Event()
            reader = asyncio.create_task(self.read_socket(ws, handover))
            if retiring is not None:  # the new socket is open: now the old one may go
                await self.close_socket(*retiring)
                retiring = None
            waiter = asyncio.create_task(handover.wait())
            stopper = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({reader, waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self.stopping.is_set():
                await self.close_socket(ws, reader)
                break
            if handover.is_set() and not reader.done():
                log.info("handing over to a fresh connection (old one keeps reading until it is open)")
                retiring = (ws, reader)
                continue
            self.connected = False
            self.reconnects += 1
            if time.monotonic() - opened_at >= self.settings.healthy_seconds:
                backoff.reset()
            delay = backoff.next_delay()
            log.warning("stream lost (%s); reconnecting in %.1f s", reader.result(), delay)
            await self.sleep_unless_stopping(delay)
        self.connected = False

    async def read_socket(self, ws, handover: asyncio.Event) -> str:
        """Read frames until the socket ends or goes silent; set `handover` on serverShutdown or old age."""
        opened = time.monotonic()
        last_frame = [opened]

        async def watchdog() -> None:
            while True:
                await asyncio.sleep(1.0)
                self.now_ms = time.time() * 1000
                now = time.monotonic()
                if now - last_frame[0] > self.settings.stream_silence_seconds:
                    log.warning("no frame for %.0f s: treating the stream as dead", now - last_frame[0])
                    ws.transport.abort()
                    return
                if now - opened > self.settings.max_connection_seconds and not handover.is_set():
                    handover.set()

        watcher = asyncio.create_task(watchdog())
        try:
            while True:
                raw = await ws.recv(decode=False)
                last_frame[0] = received = time.monotonic()
                if self.frames % READER_YIELD_EVERY_FRAMES == 0:
                    await asyncio.sleep(0)
                if self.handle_frame(raw, received) and not handover.is_set():
                    log.info("server announced shutdown")
                    handover.set()
        except ConnectionClosed as closed:
            return f"closed: {closed.rcvd.code if closed.rcvd else 'no close frame'}"
        except OSError as error:
            return f"socket error: {error}"
        finally:
            watcher.cancel()

    @staticmethod
    async def close_socket(ws, reader: asyncio.Task) -> None:
        await ws.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    async def sleep_unless_stopping(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    # ---- writer -----------------------------------------------------------------------------------
    async def connect_db(self) -> asyncpg.Connection:
        """Connect (retrying with backoff) and prepare the staging table."""
        backoff = Backoff(self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds)
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10, server_settings=WRITER_SESSION_SETTINGS)
                await database.prepare_writer_connection(conn)
                return conn
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                delay = backoff.next_delay()
                log.warning("database unavailable (%s); retrying in %.1f s", error.__class__.__name__, delay)
                await asyncio.sleep(delay)

    async def run_writer(self) -> None:
        """Flush at BATCH_ROWS or BATCH_SECONDS, whichever first; on stop, flush what is left and return."""
        conn = await self.connect_db()
        try:
            while True:
                if not self.buffer and self.stopping.is_set():
                    return
                if self.buffer and not self.stopping.is_set():
                    age = time.monotonic() - self.buffer_times[0]
                    wait = self.settings.batch_seconds - age
                    if wait > 0 and len(self.buffer) < self.settings.batch_rows:
                        await self.wait_for_rows(wait)
                        continue
                elif not self.buffer:
                    await self.wait_for_rows(self.settings.batch_seconds)
                    continue
                rows, times = self.buffer, self.buffer_times
                self.buffer, self.buffer_times = [], []
                self.rows_ready.clear()
                conn = await self.write_rows(conn, rows, times)
        finally:
            await conn.close()

    async def wait_for_rows(self, timeout: float) -> None:
        stopper = asyncio.create_task(self.stopping.wait())
        ready = asyncio.create_task(self.rows_ready.wait())
        await asyncio.wait({stopper, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        ready.cancel()

    async def write_rows(self, conn: asyncpg.Connection, rows: list[tuple], times: list[float]):
        """Write one batch, reconnecting through outages until it is stored; returns the live connection."""
        retry = Backoff(self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds)
        while True:
            try:
                await database.flush_batch(conn, rows)
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                # Connection loss, server crash/shutdown (SQLSTATE 08, 57) and anything else the server
                # refuses: the batch is validated, so retrying is right; dropping it would lose trades.
                if self.db_up:
                    log.warning("database write failed (%s: %s); buffering and reconnecting",
                                error.__class__.__name__, str(error).splitlines()[0] if str(error) else "")
                self.db_up = False
                if not conn.is_closed():
                    conn.terminate()
                if self.stopping.is_set() and time.monotonic() > self.stop_deadline:
                    log.error("shutting down with the database down: %d rows not stored "
                              "(they are refilled from REST on the next start)", len(rows) + len(self.buffer))
                    self.buffer.clear()
                    return conn
                await asyncio.sleep(retry.next_delay())  # also paces an error the server keeps returning
                conn = await self.connect_db()
        now = time.monotonic()
        self.latencies.extend(now - t for t in times)
        self.rows_committed += len(rows)
        if not self.db_up:
            log.info("database back; %d rows were buffered meanwhile", len(self.buffer))
            self.db_up = True
        self.queue_dropped_for_repair()
        return conn

    def queue_dropped_for_repair(self) -> None:
        """Rows dropped while the buffer was full become gaps for REST repair."""
        for stats in self.stats.values():
            if stats.dropped:
                stats.open_gaps.append([stats.dropped[0], stats.dropped[1], 0.0])
                stats.dropped = None
                self.gap_found.set()

    # ---- gap repair ---------------------------------------------------------------------------------
    async def run_repair(self) -> None:
        """Fill gaps that stayed open past the grace period from REST historicalTrades."""
        while True:
            await self.gap_found.wait()
            self.gap_found.clear()
            await asyncio.sleep(GAP_GRACE_SECONDS)
            for symbol, stats in self.stats.items():
                due = [g for g in stats.open_gaps if time.monotonic() - g[2] >= GAP_GRACE_SECONDS]
                for gap in due:
                    stats.open_gaps.remove(gap)
                    stats.gaps_found += 1
                    log.info("%s: gap of %d trades (ids %d..%d); filling from REST", symbol,
                             gap[1] - gap[0] + 1, gap[0], gap[1])
                    filled = await self.fill_gap(symbol, gap[0], gap[1])
                    stats.trades_backfilled += filled
                    stats.gaps_filled += 1
                    log.info("%s: gap filled with %d trades", symbol, filled)
            if any(s.open_gaps for s in self.stats.values()):
                self.gap_found.set()

    async def fill_gap(self, symbol: str, first_id: int, last_id: int) -> int:
        """Fetch ids first_id..last_id page by page into the buffer; returns how many arrived."""
        backoff = Backoff(self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds)
        next_id, filled = first_id, 0
        while next_id <= last_id:
            limit = min(REST_TRADES_LIMIT, last_id - next_id + 1)
            query = urlencode({"symbol": symbol, "fromId": next_id, "limit": limit})
            url = f"{self.settings.binance_rest_url}/api/v3/historicalTrades?{query}"
            await self.rest_budget.acquire(REST_TRADES_WEIGHT)
            try:
                status, headers, body = await asyncio.to_thread(_http_get_json, url)
            except (OSError, ValueError) as error:
                delay = backoff.next_delay()
                log.warning("%s: REST historicalTrades failed (%s); retrying in %.1f s", symbol, error, delay)
                await asyncio.sleep(delay)
                continue
            if status in (418, 429):
                retry_after = float(headers.get("Retry-After") or 60)
                log.warning("%s: REST rate limited (HTTP %d); waiting %.0f s", symbol, status, retry_after)
                self.rest_budget.block_for(retry_after)
                continue
            if status != 200 or not isinstance(body, list):
                delay = backoff.next_delay()
                log.warning("%s: REST historicalTrades answered HTTP %d; retrying in %.1f s", symbol, status, delay)
                await asyncio.sleep(delay)
                if backoff.attempt > 8:
                    log.error("%s: giving up on ids %d..%d", symbol, next_id, last_id)
                    return filled
                continue
            used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
            if used and used.isdigit() and int(used) > self.settings.rest_weight_per_minute:
                self.rest_budget.block_for(60.0)
            if not body:
                log.warning("%s: REST has no trades from id %d; gap stays open", symbol, next_id)
                return filled
            await self.wait_for_buffer_space(len(body))
            now_ms = time.time() * 1000
            for item in body:
                try:
                    row = parse_rest_trade(symbol, item, now_ms)
                except MalformedFrame as error:
                    self.count_malformed(error, "REST record")
                    continue
                if next_id <= row[1] <= last_id:
                    self.accept_rest_row(row)
                    filled += 1
            highest = max((item.get("id", -1) for item in body if isinstance(item, dict)), default=-1)
            next_id = max(next_id + 1, highest + 1) if isinstance(highest, int) else last_id + 1
        return filled

    async def wait_for_buffer_space(self, rows: int) -> None:
        """Backpressure for REST pages: wait until the writer has made room (one page may overshoot)."""
        while self.buffer and len(self.buffer) + rows > self.settings.max_buffer_rows:
            self.rows_ready.set()
            await asyncio.sleep(0.05)

    # ---- feed health ------------------------------------------------------------------------------
    def health_rows(self, interval: float) -> list[tuple]:
        now = datetime.now(timezone.utc)
        p99 = None
        if self.latencies:
            recent = sorted(list(self.latencies)[-5000:])
            p99 = recent[min(len(recent) - 1, int(0.99 * len(recent)))]
        source = "demo" if self.settings.demo else urlparse(self.settings.binance_ws_url).netloc
        malformed = sum(self.malformed.values())
        rows = []
        for symbol, s in self.stats.items():
            s.ticks_per_second = s.ticks_since_report / interval
            s.ticks_since_report = 0
            last_trade = EPOCH + timedelta(microseconds=s.last_trade_us) if s.last_trade_us is not None else None
            lag = (now - last_trade).total_seconds() if last_trade else None
            rows.append((symbol, source, self.connected, last_trade, s.last_trade_id, lag, s.ticks_per_second,
                         self.reconnects, s.gaps_found, s.gaps_filled, s.trades_backfilled, malformed,
                         len(self.buffer), p99))
        return rows

    async def run_health(self) -> None:
        """Publish feed health every HEALTH_INTERVAL seconds (skipped while the database is down)."""
        conn = None
        interval = self.settings.health_interval_seconds
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            rows = self.health_rows(now - last)
            last = now
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.dsn, timeout=5)
                await database.write_feed_health(conn, rows)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if conn is not None:
                    conn.terminate()
                conn = None

    # ---- retention --------------------------------------------------------------------------------
    async def run_retention(self) -> None:
        """Drop tick partitions older than TICK_RETENTION_DAYS, at start and then hourly."""
        while self.settings.tick_retention_days:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10)
                try:
                    dropped = await database.drop_old_tick_partitions(conn, self.settings.tick_retention_days)
                finally:
                    await conn.close()
                if dropped:
                    log.info("retention: dropped tick partitions %s (bars are kept)", ", ".join(dropped))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                log.warning("retention skipped this time (%s)", error.__class__.__name__)
            await asyncio.sleep(RETENTION_INTERVAL_SECONDS)

    # ---- lifecycle --------------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until SIGINT/SIGTERM, then flush everything buffered and return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        conn = await self.connect_db()
        try:
            self.resume_ids = await database.last_trade_ids(conn, self.symbols)
        finally:
            await conn.close()
        log.info("streaming %s from %s (resuming after ids %s)", ",".join(self.settings.symbols),
                 self.settings.binance_ws_url, self.resume_ids or "none")
        writer = asyncio.create_task(self.run_writer())
        others = [asyncio.create_task(coro) for coro in
                  (self.run_stream(), self.run_repair(), self.run_health(), self.run_retention())]
        await self.stopping.wait()
        self.stop_deadline = time.monotonic() + SHUTDOWN_FLUSH_SECONDS
        log.info("stopping: flushing %d buffered rows", len(self.buffer))
        stream = others[0]
        try:
            await asyncio.wait_for(stream, timeout=1.0)
        except TimeoutError:
            pass
        for task in others:
            task.cancel()
        self.rows_ready.set()
        try:
            await asyncio.wait_for(writer, timeout=SHUTDOWN_FLUSH_SECONDS)
        except TimeoutError:
            log.error("flush did not finish in %.0f s (database down?): %d rows not stored; they are refilled "
                      "from REST on the next start", SHUTDOWN_FLUSH_SECONDS, len(self.buffer))
            return 1
        except Exception:  # noqa: BLE001 - the last line of defence: say what happened, exit non-zero
            log.exception("writer failed during shutdown")
            return 1
        log.info("stopped: %d frames, %d rows committed, malformed %s, commit latency %s",
                 self.frames, self.rows_committed, dict(self.malformed) or "none", self.latency_summary())
        return 0

    def latency_summary(self) -> str:
        if not self.latencies:
            return "n/a"
        ordered = sorted(self.latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        return f"p50={pick(0.5):.3f}s p99={pick(0.99):.3f}s"


def unknown_symbols(rest_url: str, symbols: tuple[str, ...]) -> list[str] | None:
    """Symbols the exchange's exchangeInfo rejects (HTTP 400); None when the REST API cannot be reached."""
    unknown = []
    for symbol in symbols:
        try:
            status, _, body = _http_get_json(f"{rest_url}/api/v3/exchangeInfo?{urlencode({'symbol': symbol})}")
        except (OSError, ValueError):
            return None
        if status == 400:
            unknown.append(symbol)
        elif status != 200:
            return None
    return unknown


def main(argv: list[str]) -> int:
    """Entry point: `python main.py` streams."""
    settings = load_settings_or_exit()
    configure_logging(settings.log_level)
    if argv[1:2] == ["import"]:
        import importer  # imported here: importer imports this module
        return importer.main(argv[2:], settings)
    unknown = unknown_symbols(settings.binance_rest_url, settings.symbols)
    if unknown:
        print(f"bad setting: SYMBOLS: {', '.join(unknown)} not listed by {settings.binance_rest_url}/api/v3/exchangeInfo",
              file=sys.stderr)
        return EXIT_BAD_SETTINGS
    if unknown is None:
        log.warning("could not check SYMBOLS against %s (exchange unreachable); streaming anyway",
                    settings.binance_rest_url)
    dsn = database.ensure_database(settings)
    database.apply_migrations(dsn)
    return asyncio.run(Ingester(settings, dsn).run())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
