"""Property-based fuzzing of every parser that sees outside data: the live frame parser (main.parse_frame)
and the importer's line parsers. They may only raise MalformedFrame, and whatever they return as a row is
storable: finite positive price and qty, an int trade id that fits bigint, a plausible timestamp."""
from __future__ import annotations

import asyncio
import math
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import psycopg2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import importer
from main import EPOCH, MAX_CLOCK_AHEAD_MS, MIN_TRADE_TIME_MS, SHUTDOWN, MalformedFrame, parse_frame

EXAMPLES = 150  # per property; the whole file stays around a minute even on a busy machine
DB_EXAMPLES = 5  # the property that imports into a real database
MAX_BIGINT = 2 ** 63 - 1
SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})
NOW = datetime.now(timezone.utc)
NOW_MS = NOW.timestamp() * 1000
EARLIEST = EPOCH + timedelta(milliseconds=MIN_TRADE_TIME_MS)
LATEST = NOW + timedelta(milliseconds=MAX_CLOCK_AHEAD_MS)
VALID_DATA = {"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 3735683259, "p": "61837.63000000",
              "q": "0.02000000", "T": 1723161255342, "m": True, "M": True}
VALID_TRADE_LINE = "3735693016,61837.63000000,0.02000000,1236.75260000,1723161601437,True,True"
VALID_AGG_LINE = "2000001,61837.63000000,0.03000000,3735693016,3735693018,1723161601437,True,True"
VALID_KLINE_LINE = ("1723161600000,61837.63,61900.00,61800.00,61850.10,12.5,1723161659999,773000.5,1234,6.25,"
                    "386500.25,0")
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12)
field_texts = st.one_of(
    st.text(alphabet=string.digits + ".-+eE_ ,\"\x00nainfNAtrueTRUEFalse", max_size=25),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["True", "False", "true", "", "nan", "inf", "-0", "1e400", "0x10", "١٢٣"]),
)


def assert_storable_tick(row: tuple, symbols: frozenset | None = None) -> None:
    """A ticks row the database accepts and the bars can trust."""
    symbol, trade_id, time_us, price, qty, is_buyer_maker = row
    assert type(symbol) is str and symbol and (symbols is None or symbol in symbols)
    assert type(trade_id) is int and 0 <= trade_id <= MAX_BIGINT
    assert type(time_us) is int and EARLIEST <= EPOCH + timedelta(microseconds=time_us) <= LATEST
    assert type(price) is float and 0 < price < math.inf
    assert type(qty) is float and 0 < qty < math.inf
    assert type(is_buyer_maker) is bool


def check_frame(raw: bytes | str) -> None:
    """parse_frame either refuses with MalformedFrame or returns None / SHUTDOWN / a storable row."""
    try:
        result = parse_frame(raw, SYMBOLS, NOW_MS)
    except MalformedFrame:
        return
    assert result is None or result == SHUTDOWN or type(result) is tuple
    if type(result) is tuple:
        assert_storable_tick(result, SYMBOLS)


# ---------------------------------------------------------------------------------------------------
# main.parse_frame
# ---------------------------------------------------------------------------------------------------
@FUZZ_SETTINGS
@given(st.binary(max_size=300))
def test_parse_frame_arbitrary_bytes(raw: bytes) -> None:
    check_frame(raw)


@FUZZ_SETTINGS
@given(json_values)
def test_parse_frame_arbitrary_json(value) -> None:
    check_frame(orjson.dumps(value))
    check_frame(orjson.dumps({"stream": "btcusdt@trade", "data": value}))


@FUZZ_SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(VALID_DATA)), json_values, max_size=4),
       st.sets(st.sampled_from(sorted(VALID_DATA)), max_size=3),
       st.sampled_from(["btcusdt@trade", "ethusdt@trade", "x@trade", "btcusdt@bookTicker", "!serverShutdown"]))
def test_parse_frame_mutated_valid_frames(replacements: dict, removed: set, stream: str) -> None:
    data = {k: v for k, v in {**VALID_DATA, **replacements}.items() if k not in removed}
    check_frame(orjson.dumps({"stream": stream, "data": data}))


def test_parse_frame_trade_id_beyond_bigint() -> None:
    """orjson reads ids up to 2^64-1; one above 2^63-1 must be refused, not fail the COPY (found by this fuzzer)."""
    check_frame(orjson.dumps({"stream": "btcusdt@trade", "data": {**VALID_DATA, "t": 2 ** 64 - 1}}))


# ---------------------------------------------------------------------------------------------------
# importer line parsers
# ---------------------------------------------------------------------------------------------------
CONTEXT = importer.FileContext(symbol="BTCUSDT", now_ms=NOW_MS, interval="1m", symbols=SYMBOLS, columns=7)


@st.composite
def mutated_lines(draw, valid: str) -> str:
    """A valid CSV line with some fields replaced, dropped or duplicated (or plain garbage)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80))
    fields = valid.split(",")
    for _ in range(draw(st.integers(0, 3))):
        action, index = draw(st.integers(0, 5)), draw(st.integers(0, len(fields) - 1))
        if action == 0 and len(fields) > 1:
            del fields[index]
        elif action == 1:
            fields.insert(index, draw(field_texts))
        else:
            fields[index] = draw(field_texts)
    return ",".join(fields) + draw(st.sampled_from(["\n", "\r\n", ""]))


def parse_or_refuse(parse, line: str):
    """The parser's row, or None when it refuses with MalformedFrame (anything else propagates)."""
    try:
        return parse(line, CONTEXT)
    except MalformedFrame:
        return None


@FUZZ_SETTINGS
@given(mutated_lines(VALID_TRADE_LINE))
def test_trade_line_parser(line: str) -> None:
    row = parse_or_refuse(importer.parse_trade_line, line)
    if row is not None:
        assert_storable_tick(row)


@FUZZ_SETTINGS
@given(mutated_lines(VALID_AGG_LINE))
def test_agg_trade_line_parser(line: str) -> None:
    row = parse_or_refuse(importer.parse_agg_trade_line, line)
    if row is not None:
        symbol, agg_id, ts, price, qty, first_id, last_id, maker = row
        assert isinstance(ts, datetime) and ts.tzinfo is not None
        assert_storable_tick((symbol, agg_id, (ts - EPOCH) // timedelta(microseconds=1), price, qty, maker))
        assert type(first_id) is int and type(last_id) is int and 0 <= first_id <= last_id <= MAX_BIGINT


@FUZZ_SETTINGS
@given(mutated_lines(VALID_KLINE_LINE))
def test_kline_line_parser(line: str) -> None:
    row = parse_or_refuse(importer.parse_kline_line, line)
    if row is not None:
        _, _, open_time, close_time, open_, high, low, close, *amounts = row
        assert EARLIEST <= open_time <= close_time <= LATEST
        assert all(type(v) is float and 0 < v < math.inf for v in (open_, high, low, close))
        assert low <= min(open_, close) and max(open_, close) <= high
        assert all(0 <= v < math.inf for v in amounts) and type(amounts[2]) is int and amounts[2] <= MAX_BIGINT


@FUZZ_SETTINGS
@given(st.integers(0, 2 ** 64).map(str) | st.text(max_size=5), st.binary(max_size=200) | json_values.map(orjson.dumps))
def test_capture_line_parser(stamp: str, frame: bytes) -> None:
    line = stamp + " " + frame.decode("utf-8", "replace") + "\n"
    row = parse_or_refuse(importer.parse_capture_line, line)
    if row is not None:
        assert_storable_tick(row, SYMBOLS)


def decode_fast_rows(batch: importer.Batch) -> list[tuple]:
    """The fast path's binary COPY rows back as (trade_id, µs since 1970, price, qty, maker)."""
    payload = b"".join(batch.binary_parts)
    rows = np.frombuffer(payload, importer.tick_copy_dtype(len(CONTEXT.symbol)))
    micros = rows["time_us"].astype(np.int64)
    return [(int(i), int(t), float(p), float(q), bool(m))
            for i, t, p, q, m in zip(rows["trade_id"], micros, rows["price"], rows["qty"], rows["maker"])]


def as_comparable(row: tuple) -> tuple:
    """A staged (time in µs) or stored (datetime) ticks row as (trade_id, µs since 1970, price, qty, maker)."""
    micros = row[2] if type(row[2]) is int else (row[2] - EPOCH) // timedelta(microseconds=1)
    return row[1], micros, row[3], row[4], row[5]


valid_trade_lines = st.builds(
    lambda i, price, qty, stamp, maker: f"{i},{price},{qty},1,{stamp},{maker},True\n",
    st.integers(0, MAX_BIGINT), st.decimals(min_value="0.00000001", max_value="1000000", places=8).map(str),
    st.decimals(min_value="0.00000001", max_value="100000", places=8).map(str),
    st.integers(MIN_TRADE_TIME_MS, int(NOW_MS)) | st.integers(MIN_TRADE_TIME_MS * 1000, int(NOW_MS) * 1000),
    st.sampled_from(["True", "False"]))


@FUZZ_SETTINGS
@given(st.lists(valid_trade_lines | mutated_lines(VALID_TRADE_LINE).map(lambda s: s.rstrip("\r\n") + "\n"),
                min_size=1, max_size=200))
def test_trades_fast_path_agrees_with_row_parser(lines: list[str]) -> None:
    """The vectorised chunk parser stores exactly the rows parse_trade_line accepts, and counts the rest bad."""
    assume(all("\r" not in line[:-1] for line in lines))  # a bare \r splits a line for pandas and for Python
    batch, report = importer.Batch(), importer.FileReport(Path("BTCUSDT-trades-x.csv"))
    importer.parse_trade_chunk(lines, 1, 7, CONTEXT, batch, report)
    expected = [parse_or_refuse(importer.parse_trade_line, line) for line in lines]
    got = sorted(decode_fast_rows(batch) + [as_comparable(r) for r in batch.rows])
    assert got == sorted(as_comparable(r) for r in expected if r is not None)
    assert sum(report.bad.values()) == sum(r is None for r in expected)


# ---------------------------------------------------------------------------------------------------
# Through a real database: nothing from a bad record is stored
# ---------------------------------------------------------------------------------------------------
@settings(max_examples=DB_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(valid_trade_lines | mutated_lines(VALID_TRADE_LINE).map(lambda s: s.rstrip("\r\n") + "\n"),
                      min_size=1, max_size=60))
def test_import_stores_exactly_the_valid_rows(dsn: str, tmp_path: Path, lines: list[str]) -> None:
    assume(all("\r" not in line[:-1] for line in lines) and not importer.looks_like_header(lines[0]))
    path = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    path.write_text("".join(lines), encoding="utf-8", errors="replace")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE ticks, bars_1s")
    conn.close()
    [report] = asyncio.run(importer.import_paths(dsn, [path], batch_rows=16))
    # a whole file may be refused (empty, or its first row has no trades shape): then nothing is stored
    assert report.error in ("", "empty file") or report.error.startswith("looks like trades but has")
    lines_read = [] if report.error else path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    accepted = {}
    for line in lines_read:
        row = parse_or_refuse(importer.parse_trade_line, line)
        if row is not None:
            accepted.setdefault(as_comparable(row)[:2], as_comparable(row))  # first of a duplicate key wins
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT symbol, trade_id, ts, price, qty, is_buyer_maker FROM ticks")
        stored = sorted(as_comparable(r) for r in cur.fetchall())
        cur.execute("SELECT coalesce(sum(trade_count), 0) FROM bars_1s")
        in_bars = cur.fetchone()[0]
    conn.close()
    assert stored == sorted(accepted.values())
    assert in_bars == len(stored)
