"""Bulk import of Binance history files into PostgreSQL: `python main.py import [options] FILE...`

Formats (zipped or plain; a header row is detected and skipped; each timestamp is read as microseconds
when it is >= 10**14, else milliseconds -- Binance switched spot files to microseconds on 2025-01-01):

  trades     SYMBOL-trades-DATE.{zip,csv}   id,price,qty,quoteQty,time,isBuyerMaker[,isBestMatch]
             -> `ticks`, through the live ingester's path (COPY into ticks_stage + ingest_staged_ticks()),
                so duplicates are dropped and `bars_1s` is folded exactly as for live trades
  capture    sym_YYYYMMDD.gz               `<recv ns> <combined-stream frame>` lines (our recorder)
             -> `ticks` the same way; frames are parsed by main.parse_frame (non-trade frames skipped)
  aggTrades  SYMBOL-aggTrades-DATE.{zip,csv} aggId,price,qty,firstId,lastId,time,isBuyerMaker[,isBestMatch]
             -> `agg_trades` only. An aggregate trade is not a trade: storing it in `ticks` would mix two
                id spaces and double-count bars when the same period's trades are imported too.
  klines     SYMBOL-1m-DATE.{zip,csv}       openTime,open,high,low,close,volume,closeTime,quoteVolume,
                                           count,takerBuyVolume,takerBuyQuoteVolume,ignore
             -> `imported_klines` keyed by (symbol, interval, open_time); never into `bars_1s`.

The kind and symbol come from the file name (`--symbol` overrides the symbol); a file whose name says
nothing is recognised by its content (column count, or the capture line shape). Every write is
idempotent: re-importing a file stores nothing new.

Bad rows are never stored and never stop the import: each is counted by kind and the first few of each
kind are printed with file and line number. A file that is none of the formats (or unreadable) gets one
line `import: FILE: why` on stderr and the import continues with the next file; the exit code is then 2
(0 when every file was imported).

Speed: rows are parsed with str.split and validated by main.make_tick_row / main.parse_frame (the live
ingester's rules), batched (BATCH_ROWS per COPY) and written by IMPORT_JOBS connections in parallel while
the next batch is being parsed. Batches commit one by one: an interrupted import is finished by running it
again.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import io
import itertools
import math
import re
import sys
import time
import zipfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

import asyncpg
import numpy as np
import pandas as pd

import database
from main import EPOCH, MAX_CLOCK_AHEAD_MS, MIN_TRADE_TIME_MS, MalformedFrame, _decimal, make_tick_row, parse_frame
from settings import SYMBOL_PATTERN, Settings

BATCH_ROWS = 100_000  # rows per COPY: large enough to amortise the per-statement cost of the merge
IMPORT_JOBS = 2  # database connections writing batches concurrently
QUEUE_BATCHES_PER_JOB = 2  # parsed batches waiting per connection (bounds memory)
MICROSECONDS_FROM = 10 ** 14  # a stamp this large is µs: as ms it would be the year 5138
MICROSECONDS_PER_MILLISECOND = 1000
MAX_BIGINT = 2 ** 63 - 1
BAD_ROW_EXAMPLES = 3  # bad rows shown per kind (all are counted)
PROGRESS_INTERVAL_SECONDS = 0.25
DEADLOCK_RETRIES = 5  # concurrent bar merges of neighbouring batches can (rarely) deadlock: retry
EXIT_OK, EXIT_FILE_ERRORS = 0, 2
SNIFF_LINES = 2  # lines read to recognise a file by content (a header and one data row)
TEXT_BUFFER_BYTES = 1 << 20
SESSION_SETTINGS = {  # import sessions only: big in-memory sorts and staging tables, no commit fsync wait
    "work_mem": "256MB",
    "temp_buffers": "256MB",
    "synchronous_commit": "off",  # a crash loses at most the last batches, which a re-import restores
}
TRUE_TEXTS, FALSE_TEXTS = ("True", "true", "TRUE"), ("False", "false", "FALSE")  # spot, futures, pandas' own
BOOLEANS = {**dict.fromkeys(TRUE_TEXTS, True), **dict.fromkeys(FALSE_TEXTS, False)}
SLOW_PATH_LINES = 64  # a chunk the vectorised parser refuses is halved down to this size, then parsed per row
COPY_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags = 0, header extension length = 0
COPY_BINARY_TRAILER = b"\xff\xff"  # field count -1
INT64_BYTES, FLOAT8_BYTES, BOOL_BYTES = 8, 8, 1
KLINE_INTERVALS_MS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
                      "30m": 1_800_000, "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
                      "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000,
                      "1w": 604_800_000}

TRADES, AGG_TRADES, KLINES, CAPTURE = "trades", "aggTrades", "klines", "capture"
BULK_NAME = re.compile(r"^(?P<symbol>[A-Za-z0-9]{2,20})-(?P<kind>trades|aggTrades|\d+[smhdwM])-")
CAPTURE_NAME = re.compile(r"^(?P<symbol>[A-Za-z0-9]{2,20})_\d{8}\.gz$")
CAPTURE_LINE = re.compile(r"^\d+ \{")

class ImportFileError(Exception):
    """A whole file cannot be imported (not one of the formats, unreadable, no symbol)."""


class AnySymbol(frozenset):
    """Stands for "every well-formed symbol" where parse_frame wants the set of expected symbols."""

    def __contains__(self, item: object) -> bool:
        return type(item) is str and SYMBOL_PATTERN.match(item) is not None


@dataclass
class FileContext:
    """What a row parser needs besides the line: the file's symbol, kline interval and the clock."""

    symbol: str
    now_ms: float
    interval: str = ""
    symbols: frozenset = field(default_factory=AnySymbol)
    columns: int = 0  # CSV columns per line (trades: 7 spot, 6 futures)


# ---------------------------------------------------------------------------------------------------
# Row parsers: one text line -> one row tuple (or None: nothing to store); MalformedFrame for a bad row
# ---------------------------------------------------------------------------------------------------
def _integer(text: str, kind: str) -> int:
    """A non-negative 64-bit integer field."""
    try:
        value = int(text)
    except ValueError:
        raise MalformedFrame(kind, repr(text)) from None
    if not 0 <= value <= MAX_BIGINT:
        raise MalformedFrame(kind, repr(text))
    return value


def _boolean(text: str) -> bool:
    """Binance's True/False (futures files write true/false)."""
    try:
        return BOOLEANS[text]
    except KeyError:
        raise MalformedFrame("bad_is_buyer_maker", repr(text)) from None


def _non_negative(text: str, name: str) -> float:
    """A finite decimal >= 0 (volumes: a minute without trades has volume 0)."""
    try:
        value = float(text)
    except ValueError:
        raise MalformedFrame(f"bad_{name}", repr(text)) from None
    if not 0 <= value < math.inf:
        raise MalformedFrame(f"bad_{name}", repr(text))
    return value


def _fields(line: str, counts: tuple[int, ...]) -> list[str]:
    """Split a CSV line; its column count must be one of `counts`."""
    fields = line.rstrip("\r\n").split(",")
    if len(fields) not in counts:
        raise MalformedFrame("bad_column_count", f"{len(fields)} columns, expected {' or '.join(map(str, counts))}")
    return fields


def tick_row(symbol: str, trade_id: int, price: str, qty: str, stamp: int, is_buyer_maker: bool,
             now_ms: float) -> tuple:
    """make_tick_row with a ms or µs stamp (µs keeps its precision)."""
    if stamp < MICROSECONDS_FROM:
        return make_tick_row(symbol, trade_id, price, qty, stamp, is_buyer_maker, now_ms)
    row = make_tick_row(symbol, trade_id, price, qty, stamp // MICROSECONDS_PER_MILLISECOND, is_buyer_maker, now_ms)
    return row[:2] + (stamp,) + row[3:]


def timestamp(text: str, kind: str, now_ms: float) -> datetime:
    """A ms or µs epoch stamp within the ingester's plausible range -> UTC datetime."""
    stamp = _integer(text, kind)
    micros = stamp if stamp >= MICROSECONDS_FROM else stamp * MICROSECONDS_PER_MILLISECOND
    if not MIN_TRADE_TIME_MS <= micros // MICROSECONDS_PER_MILLISECOND <= now_ms + MAX_CLOCK_AHEAD_MS:
        raise MalformedFrame(kind, repr(text))
    return EPOCH + timedelta(microseconds=micros)


TRADE_COLUMN_COUNTS = (7, 6)  # spot (with isBestMatch), futures


def parse_trade_line(line: str, context: FileContext) -> tuple:
    """`id,price,qty,quoteQty,time,isBuyerMaker[,isBestMatch]` -> ticks row."""
    fields = _fields(line, TRADE_COLUMN_COUNTS)
    return tick_row(context.symbol, _integer(fields[0], "bad_trade_id"), fields[1], fields[2],
                    _integer(fields[4], "bad_time"), _boolean(fields[5]), context.now_ms)


AGG_COLUMN_COUNTS = (8, 7)  # spot (with isBestMatch), futures


def parse_agg_trade_line(line: str, context: FileContext) -> tuple:
    """`aggId,price,qty,firstId,lastId,time,isBuyerMaker[,isBestMatch]` -> agg_trades row."""
    fields = _fields(line, AGG_COLUMN_COUNTS)
    first_id, last_id = _integer(fields[3], "bad_first_trade_id"), _integer(fields[4], "bad_last_trade_id")
    if first_id > last_id:
        raise MalformedFrame("bad_trade_id_range", f"{first_id} > {last_id}")
    symbol, agg_id, time_us, price, qty, maker = tick_row(
        context.symbol, _integer(fields[0], "bad_agg_id"), fields[1], fields[2], _integer(fields[5], "bad_time"),
        _boolean(fields[6]), context.now_ms)
    return symbol, agg_id, EPOCH + timedelta(microseconds=time_us), price, qty, first_id, last_id, maker


KLINE_COLUMN_COUNTS = (12,)


def parse_kline_line(line: str, context: FileContext) -> tuple:
    """`openTime,open,high,low,close,volume,closeTime,quoteVolume,count,takerBuyVolume,...` -> kline row."""
    fields = _fields(line, KLINE_COLUMN_COUNTS)
    open_time = timestamp(fields[0], "bad_open_time", context.now_ms)
    close_time = timestamp(fields[6], "bad_close_time", context.now_ms)
    if close_time < open_time:
        raise MalformedFrame("bad_close_time", "before open time")
    open_, high, low, close = (_decimal(fields[i], name) for i, name in
                               ((1, "open"), (2, "high"), (3, "low"), (4, "close")))
    if not low <= min(open_, close) <= max(open_, close) <= high:
        raise MalformedFrame("bad_ohlc", "open/close outside [low, high]")
    return (context.symbol, context.interval, open_time, close_time, open_, high, low, close,
            _non_negative(fields[5], "volume"), _non_negative(fields[7], "quote_volume"),
            _integer(fields[8], "bad_trade_count"), _non_negative(fields[9], "taker_buy_volume"),
            _non_negative(fields[10], "taker_buy_quote_volume"))


def parse_capture_line(line: str, context: FileContext) -> tuple | None:
    """`<recv ns> <frame>` -> ticks row via main.parse_frame; None for non-trade frames and REST snapshots."""
    stamp, separator, frame = line.rstrip("\r\n").partition(" ")
    if not separator or not stamp.isdigit():
        raise MalformedFrame("bad_capture_line", "expected '<receive ns> <frame json>'")
    try:
        row = parse_frame(frame, context.symbols, context.now_ms)
    except MalformedFrame as error:
        if error.kind == "no_stream":  # a REST depth snapshot the recorder inserted
            return None
        raise
    if type(row) is not tuple:
        return None  # bookTicker, depth, serverShutdown, ...
    if row[1] > MAX_BIGINT:
        raise MalformedFrame("bad_trade_id", repr(row[1]))
    return row


# ---------------------------------------------------------------------------------------------------
# Trades fast path: pandas parses a whole chunk, numpy validates it with the same rules as make_tick_row
# and builds the binary COPY payload; any line it cannot certify goes to parse_trade_line (the authority)
# ---------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Rows for one COPY: a binary COPY payload (trades fast path) and/or row tuples."""

    rows: list[tuple] = field(default_factory=list)
    binary_parts: list[bytes] = field(default_factory=list)
    binary_rows: int = 0

    def __len__(self) -> int:
        return len(self.rows) + self.binary_rows

    def binary(self) -> bytes:
        """The whole PGCOPY payload of the fast-path rows."""
        return COPY_BINARY_HEADER + b"".join(self.binary_parts) + COPY_BINARY_TRAILER


def tick_copy_dtype(symbol_bytes: int) -> np.dtype:
    """One binary COPY row of ticks_stage: field count, then (length, big-endian value) per column."""
    return np.dtype([("fields", ">i2"), ("symbol_len", ">i4"), ("symbol", f"S{symbol_bytes}"),
                     ("trade_id_len", ">i4"), ("trade_id", ">i8"), ("time_us_len", ">i4"), ("time_us", ">i8"),
                     ("price_len", ">i4"), ("price", ">f8"), ("qty_len", ">i4"), ("qty", ">f8"),
                     ("maker_len", ">i4"), ("maker", "i1")])


_ANY = r"[^,\r\n]*+"  # a column the row parser ignores (quoteQty, isBestMatch); possessive: no backtracking
_INT = r"[0-9]++"
_DECIMAL = r"[0-9.]++(?:[eE][-+]?+[0-9]++)?+"  # plain decimals only; anything else goes to the row parser
_BOOL = "(?:" + "|".join(TRUE_TEXTS + FALSE_TEXTS) + ")"
TRADE_CHUNK_SHAPES = {  # a whole chunk in one C-level match (pandas alone takes "5.0" as an id, "1" as True)
    columns: re.compile(rf"(?:{_INT},{_DECIMAL},{_DECIMAL},{_ANY},{_INT},{_BOOL}{f',{_ANY}' * (columns - 6)}\r?\n)*+")
    for columns in TRADE_COLUMN_COUNTS}
TRADE_USED_COLUMNS = (0, 1, 2, 4, 5)  # id, price, qty, time, isBuyerMaker


def read_trade_chunk(text: str, columns: int) -> pd.DataFrame:
    """Typed pandas parse of the used columns of trade lines already checked by TRADE_CHUNK_SHAPES."""
    dtypes = {0: np.int64, 1: np.float64, 2: np.float64, 4: np.int64, 5: bool}
    return pd.read_csv(io.StringIO(text), header=None, names=list(range(columns)), usecols=list(TRADE_USED_COLUMNS),
                       dtype=dtypes, true_values=list(TRUE_TEXTS), false_values=list(FALSE_TEXTS), engine="c",
                       quoting=csv.QUOTE_NONE, skip_blank_lines=False, na_filter=False)


def trade_chunk_fast(lines: list[str], columns: int, context: FileContext) -> tuple[bytes, np.ndarray] | None:
    """(binary COPY rows, indexes of lines left for the per-row parser), or None if pandas refuses the chunk."""
    text = "".join(lines)
    if not text.endswith("\n"):
        text += "\n"
    if not TRADE_CHUNK_SHAPES[columns].fullmatch(text):  # pandas alone would take "5.0" as an id, or extra columns
        return None
    try:
        frame = read_trade_chunk(text, columns)
    except (ValueError, OverflowError, TypeError):  # pandas' ParserError is a ValueError
        return None
    if len(frame) != len(lines):
        return None
    ids, stamps = frame[0].to_numpy(np.int64), frame[4].to_numpy(np.int64)
    prices, quantities = frame[1].to_numpy(np.float64), frame[2].to_numpy(np.float64)
    is_micros = stamps >= MICROSECONDS_FROM
    stamps_ms = np.where(is_micros, stamps // MICROSECONDS_PER_MILLISECOND, stamps)
    good = ((ids >= 0) & (stamps_ms >= MIN_TRADE_TIME_MS) & (stamps_ms <= context.now_ms + MAX_CLOCK_AHEAD_MS)
            & (prices > 0) & (prices < np.inf) & (quantities > 0) & (quantities < np.inf))
    symbol = context.symbol.encode()
    rows = np.empty(int(good.sum()), tick_copy_dtype(len(symbol)))
    rows["fields"] = len(database.STAGE_COLUMNS)
    rows["symbol_len"], rows["symbol"] = len(symbol), symbol
    rows["trade_id_len"], rows["trade_id"] = INT64_BYTES, ids[good]
    micros = np.where(is_micros, stamps, stamps * MICROSECONDS_PER_MILLISECOND)[good]
    rows["time_us_len"], rows["time_us"] = INT64_BYTES, micros
    rows["price_len"], rows["price"] = FLOAT8_BYTES, prices[good]
    rows["qty_len"], rows["qty"] = FLOAT8_BYTES, quantities[good]
    rows["maker_len"], rows["maker"] = BOOL_BYTES, frame[5].to_numpy(bool)[good]
    return rows.tobytes(), np.flatnonzero(~good)


def parse_trade_chunk(lines: list[str], first_line_number: int, columns: int, context: FileContext,
                      batch: Batch, report: "FileReport") -> None:
    """Add a chunk of trade lines to `batch`: vectorised where possible, halving around refused lines."""
    fast = trade_chunk_fast(lines, columns, context) if lines else None
    if fast is not None:
        payload, leftovers = fast
        batch.binary_parts.append(payload)
        batch.binary_rows += len(lines) - len(leftovers)
        indexes: Iterable[int] = leftovers.tolist()
    elif len(lines) > SLOW_PATH_LINES:
        half = len(lines) // 2
        parse_trade_chunk(lines[:half], first_line_number, columns, context, batch, report)
        parse_trade_chunk(lines[half:], first_line_number + half, columns, context, batch, report)
        return
    else:
        indexes = range(len(lines))
    for index in indexes:
        try:
            batch.rows.append(parse_trade_line(lines[index], context))
        except MalformedFrame as error:
            report.add_bad(first_line_number + index, error)


@dataclass(frozen=True)
class Format:
    """One importable format: how to parse a line, and which table its rows go to."""

    kind: str
    parse: Callable[[str, FileContext], tuple | None]
    target: str  # "ticks", "agg_trades" or "imported_klines"
    column_counts: tuple[int, ...] = ()
    has_header_check: bool = True


FORMATS = {
    TRADES: Format(TRADES, parse_trade_line, "ticks", TRADE_COLUMN_COUNTS),
    AGG_TRADES: Format(AGG_TRADES, parse_agg_trade_line, "agg_trades", AGG_COLUMN_COUNTS),
    KLINES: Format(KLINES, parse_kline_line, "imported_klines", KLINE_COLUMN_COUNTS),
    CAPTURE: Format(CAPTURE, parse_capture_line, "ticks", has_header_check=False),
}
SPOT_KIND_BY_COLUMNS = {7: TRADES, 8: AGG_TRADES, 12: KLINES}


# ---------------------------------------------------------------------------------------------------
# Files: open (zip / gzip / plain), recognise, report
# ---------------------------------------------------------------------------------------------------
@dataclass
class OpenedFile:
    """A text stream over the file's CSV/capture lines, plus how far through the file we are."""

    text: TextIO
    position: Callable[[], int]
    total_bytes: int


def open_text(path: Path, stack: ExitStack) -> OpenedFile:
    """Open a .zip (its one .csv member), a gzip file or a plain file as text lines."""
    with open(path, "rb") as probe:
        magic = probe.read(4)
    raw = stack.enter_context(open(path, "rb"))
    total = path.stat().st_size
    if magic.startswith(b"PK"):
        try:
            archive = stack.enter_context(zipfile.ZipFile(raw))
        except zipfile.BadZipFile as error:
            raise ImportFileError(f"not a readable zip archive ({error})") from None
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise ImportFileError(f"zip holds {len(members)} files; expected exactly one CSV")
        binary: Any = stack.enter_context(archive.open(members[0]))
        position, total = binary.tell, members[0].file_size
    elif magic.startswith(b"\x1f\x8b"):
        binary, position = stack.enter_context(gzip.GzipFile(fileobj=raw)), raw.tell
    else:
        binary, position = raw, raw.tell
    buffered = io.BufferedReader(binary, TEXT_BUFFER_BYTES) if not isinstance(binary, io.BufferedReader) else binary
    text = io.TextIOWrapper(buffered, encoding="utf-8-sig", errors="replace", newline="")
    return OpenedFile(text, position, max(total, 1))


def looks_like_header(line: str) -> bool:
    """A first line whose first field is not a number is a header (`id,price,...`)."""
    first = line.split(",", 1)[0].strip()
    return bool(first) and not first.isdigit()


def recognise(path: Path, first_lines: list[str], symbol_option: str | None) -> tuple[Format, FileContext]:
    """The format, symbol, interval and column count of a file, from its name and its first lines."""
    name_match, capture_match = BULK_NAME.match(path.name), CAPTURE_NAME.match(path.name)
    data_lines = [line for line in first_lines if line.strip()]
    if not data_lines:
        raise ImportFileError("empty file")
    sample = data_lines[1] if looks_like_header(data_lines[0]) and len(data_lines) > 1 else data_lines[0]
    columns = len(sample.rstrip("\r\n").split(","))
    interval = ""
    if CAPTURE_LINE.match(data_lines[0]):
        kind, columns = CAPTURE, 0
    elif name_match:
        kind = name_match["kind"]
        if kind not in FORMATS:
            kind, interval = KLINES, kind
    else:
        kind = SPOT_KIND_BY_COLUMNS.get(columns, "")
        if not kind:
            raise ImportFileError(f"not a Binance trades, aggTrades, klines or capture file (first line has "
                                  f"{columns} columns, and the name is not SYMBOL-kind-DATE)")
    fmt = FORMATS[kind]
    if kind != CAPTURE and columns not in fmt.column_counts:
        raise ImportFileError(f"looks like {kind} but has {columns} columns "
                              f"(a {kind} file has {' or '.join(map(str, fmt.column_counts))})")
    if kind == KLINES and not interval:
        interval = kline_interval(sample)
    named = name_match or capture_match
    symbol = (symbol_option or (named["symbol"] if named else "")).upper()
    if kind != CAPTURE and not SYMBOL_PATTERN.match(symbol):
        raise ImportFileError("no symbol: name the file SYMBOL-kind-DATE.csv or pass --symbol")
    symbols = frozenset({symbol}) if symbol else AnySymbol()
    return fmt, FileContext(symbol=symbol, now_ms=time.time() * 1000, interval=interval, symbols=symbols,
                            columns=columns)


def kline_interval(sample: str) -> str:
    """Interval of a kline file whose name does not say it: closeTime - openTime + 1 ms."""
    fields = sample.split(",")
    try:
        open_ms, close_ms = (int(f) if int(f) < MICROSECONDS_FROM else int(f) // MICROSECONDS_PER_MILLISECOND
                             for f in (fields[0], fields[6]))
    except ValueError:
        raise ImportFileError("kline interval unknown: name the file SYMBOL-1m-DATE.csv") from None
    by_length = {ms: name for name, ms in KLINE_INTERVALS_MS.items()}
    if close_ms - open_ms + 1 not in by_length:
        raise ImportFileError("kline interval unknown: name the file SYMBOL-1m-DATE.csv")
    return by_length[close_ms - open_ms + 1]


@dataclass
class FileReport:
    """What happened to one file."""

    path: Path
    kind: str = ""
    target: str = ""
    rows_read: int = 0
    rows_new: int = 0
    skipped: int = 0  # lines with nothing to store: header, non-trade frames
    bad: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    def add_bad(self, line_number: int, error: MalformedFrame) -> None:
        """Count a bad row; keep the first few of each kind as examples."""
        self.bad[error.kind] += 1
        if self.bad[error.kind] <= BAD_ROW_EXAMPLES:
            self.examples.append(f"  {self.path.name}:{line_number}: {error}")

    def summary(self) -> str:
        """One line, plus one per bad-row kind and its examples."""
        if self.error:
            return f"import: {self.path}: {self.error}"
        rate = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.path.name}: {self.kind} -> {self.target}: {self.rows_read:,} valid rows, "
                 f"{self.rows_new:,} new, {self.rows_read - self.rows_new:,} already stored, "
                 f"{sum(self.bad.values()):,} bad, {self.skipped:,} skipped, {self.seconds:.1f} s "
                 f"({rate:,.0f} rows/s)"]
        for kind, count in sorted(self.bad.items()):
            lines.append(f"  bad rows ({kind}): {count:,}, never stored")
        lines.extend(self.examples)
        return "\n".join(lines)


class Progress:
    """A one-line progress bar on stderr, redrawn with \\r at most every PROGRESS_INTERVAL_SECONDS."""

    def __init__(self, label: str, opened: OpenedFile, stream: TextIO | None) -> None:
        self.label, self.opened, self.stream = label, opened, stream
        self.started = self.last_drawn = time.monotonic()

    def update(self, rows: int, force: bool = False) -> None:
        """Redraw if enough time has passed (or `force`)."""
        now = time.monotonic()
        if self.stream is None or (not force and now - self.last_drawn < PROGRESS_INTERVAL_SECONDS):
            return
        self.last_drawn = now
        percent = min(100.0, 100.0 * self.opened.position() / self.opened.total_bytes)
        rate = rows / max(now - self.started, 1e-9)
        self.stream.write(f"\r{self.label}: {rows:,} rows  {rate:,.0f} rows/s  {percent:5.1f}%")
        self.stream.flush()

    def finish(self, rows: int) -> None:
        """Final redraw at 100 % and end the line."""
        if self.stream is not None:
            self.update(rows, force=True)
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------
async def open_writer(dsn: str) -> asyncpg.Connection:
    """An import session with its staging tables."""
    conn = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    await database.prepare_import_connection(conn)
    return conn


async def write_batch(conn: asyncpg.Connection, target: str, batch: Batch) -> int:
    """Store one batch idempotently in `target` (ticks: staging + ingest_staged_ticks()); return new rows."""
    stage, columns, merge = database.IMPORT_TARGETS[target]
    for attempt in range(DEADLOCK_RETRIES):
        try:
            async with conn.transaction():
                if batch.binary_rows:
                    await conn.copy_to_table(stage, source=io.BytesIO(batch.binary()), columns=columns,
                                             format="binary")
                if batch.rows:
                    await conn.copy_records_to_table(stage, records=batch.rows, columns=columns)
                return await conn.fetchval(merge)
        except asyncpg.DeadlockDetectedError:
            if attempt == DEADLOCK_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def read_batches(lines: Iterable[str], fmt: Format, context: FileContext, report: FileReport,
                 batch_rows: int) -> Iterator[Batch]:
    """Parse a file's lines into batches; bad rows go to the report."""
    numbered = enumerate(lines, start=1)
    if fmt.has_header_check:
        first = next(numbered, None)
        if first is not None and looks_like_header(first[1]):
            report.skipped += 1
        elif first is not None:
            numbered = itertools.chain([first], numbered)
    if fmt.kind == TRADES:
        while chunk := list(itertools.islice(numbered, batch_rows)):
            batch = Batch()
            parse_trade_chunk([line for _, line in chunk], chunk[0][0], context.columns, context, batch, report)
            if len(batch):
                yield batch
        return
    parse = fmt.parse
    batch = Batch()
    append = batch.rows.append
    for line_number, line in numbered:
        try:
            row = parse(line, context)
        except MalformedFrame as error:
            report.add_bad(line_number, error)
            continue
        if row is None:
            report.skipped += 1
            continue
        append(row)
        if len(batch.rows) >= batch_rows:
            yield batch
            batch = Batch()
            append = batch.rows.append
    if batch.rows:
        yield batch


async def import_file(path: Path, writers: list[asyncpg.Connection], symbol: str | None, batch_rows: int,
                      progress_stream: TextIO | None) -> FileReport:
    """Import one file with the given connections; a file-level problem ends up in report.error."""
    report = FileReport(path)
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            try:
                opened = open_text(path, stack)
                first_lines = [opened.text.readline() for _ in range(SNIFF_LINES)]
            except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as error:
                raise ImportFileError(f"cannot read ({error})") from None
            fmt, context = recognise(path, first_lines, symbol)
            report.kind, report.target = fmt.kind + (f" {context.interval}" if context.interval else ""), fmt.target
            lines = itertools.chain([line for line in first_lines if line], opened.text)
            progress = Progress(path.name, opened, progress_stream)
            queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_BATCHES_PER_JOB * len(writers))

            async def drain(conn: asyncpg.Connection) -> None:
                while (batch := await queue.get()) is not None:
                    new_rows = await write_batch(conn, fmt.target, batch)  # not `+= await`: a race
                    report.rows_new += new_rows

            workers = [asyncio.create_task(drain(conn)) for conn in writers]
            try:
                for batch in read_batches(lines, fmt, context, report, batch_rows):
                    report.rows_read += len(batch)
                    await queue.put(batch)
                    progress.update(report.rows_read)
                    if any(w.done() for w in workers):
                        break  # a writer failed: its exception is raised below
            except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as error:
                raise ImportFileError(f"cannot read past row {report.rows_read:,} ({error})") from None
            finally:
                for worker in workers:
                    if not worker.done():
                        await queue.put(None)
                await asyncio.gather(*workers)
            progress.finish(report.rows_read)
    except ImportFileError as error:
        report.error = str(error)
    report.seconds = time.monotonic() - started
    return report


async def import_paths(dsn: str, paths: list[Path], symbol: str | None = None, batch_rows: int = BATCH_ROWS,
                       jobs: int = IMPORT_JOBS, progress_stream: TextIO | None = None) -> list[FileReport]:
    """Import every file in turn; return one report per file."""
    writers = [await open_writer(dsn) for _ in range(jobs)]
    try:
        return [await import_file(Path(p), writers, symbol, batch_rows, progress_stream) for p in paths]
    finally:
        for conn in writers:
            await conn.close()


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options of `python main.py import`."""
    parser = argparse.ArgumentParser(prog="python main.py import",
                                     description="Import Binance history files (trades, aggTrades, klines, "
                                                 "recorded capture) into the database; safe to repeat.")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--symbol", help="symbol for every file (default: from each file name)")
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS, help=f"rows per COPY (default {BATCH_ROWS})")
    parser.add_argument("--jobs", type=int, default=IMPORT_JOBS,
                        help=f"database connections writing in parallel (default {IMPORT_JOBS})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.symbol and not SYMBOL_PATTERN.match(args.symbol.upper()):
        parser.error(f"--symbol {args.symbol!r}: must be like BTCUSDT (A-Z, 0-9, 2-20 chars)")
    if args.batch_rows < 1 or args.jobs < 1:
        parser.error("--batch-rows and --jobs must be at least 1")
    return args


def main(argv: list[str], settings: Settings) -> int:
    """`python main.py import FILE...`: import, print one summary per file; exit 2 if any file failed."""
    args = parse_args(argv)
    dsn = database.ensure_database(settings)
    database.apply_migrations(dsn)
    progress = None if args.quiet else sys.stderr
    reports = asyncio.run(import_paths(dsn, args.files, args.symbol and args.symbol.upper(), args.batch_rows,
                                       args.jobs, progress))
    for report in reports:
        print(report.summary(), file=sys.stderr if report.error else sys.stdout)
    return EXIT_FILE_ERRORS if any(r.error for r in reports) else EXIT_OK
