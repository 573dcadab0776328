"""The frame parser on real Binance frames, protocol fixtures, and every kind of malformed frame."""
from __future__ import annotations

import time

import orjson
import pytest

from main import SHUTDOWN, MalformedFrame, combined_stream_url, parse_frame, parse_rest_trade
from tests.capture import capture_lines

SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})
NOW_MS = 1_723_200_000_000  # shortly after the capture
GOOD = {"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 3735683259, "p": "61837.63000000",
        "q": "0.02000000", "T": 1723161255342, "m": True, "M": True}


def frame(data: dict, stream: str = "btcusdt@trade") -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


def test_every_recorded_trade_parses_to_binance_values(shared_data):
    files = sorted((shared_data / "binance-spot-capture").glob("*.gz"))
    trades = ignored = 0
    for _, text in capture_lines(files):
        row = parse_frame(text, SYMBOLS, NOW_MS)
        if row is None:
            ignored += 1
            continue
        data = orjson.loads(text)["data"]
        symbol, trade_id, time_us, price, qty, is_buyer_maker = row
        assert (symbol, trade_id, is_buyer_maker) == (data["s"], data["t"], data["m"])
        assert price == float(data["p"]) and qty == float(data["q"])
        assert time_us == data["T"] * 1000  # exchange trade time (µs), not receive time
        trades += 1
    assert trades == 34_419
    assert ignored > 100_000  # bookTicker and depth frames are not ours


@pytest.mark.parametrize("name", ["BINANCE.ws.1.0", "BINANCE_US.ws.1.0", "BINANCE_FUTURES.ws.1.0"])
def test_other_streams_in_protocol_fixtures_are_ignored_without_error(shared_data, name):
    lines = (shared_data / "binance-protocol-fixtures" / name).read_text().splitlines()[1:]
    results = {parse_frame(line.partition(": ")[2], SYMBOLS, NOW_MS) for line in lines if ": {" in line}
    assert results == {None}


def test_older_feed_extra_keys_are_tolerated():
    row = parse_frame(frame({**GOOD, "b": 88, "a": 50}), SYMBOLS, NOW_MS)
    assert row[1] == GOOD["t"]


def test_subscription_reply_and_server_shutdown():
    assert parse_frame(b'{"result":null,"id":1}', SYMBOLS, NOW_MS) is None
    shutdown = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1723161255343}}'
    assert parse_frame(shutdown, SYMBOLS, NOW_MS) is SHUTDOWN


MALFORMED = {
    "bad_json": b'{"stream":"btcusdt@trade","data":{',
    "not_an_object": b"[1,2]",
    "no_stream": b'{"data":{}}',
    "no_data": b'{"stream":"btcusdt@trade","data":[]}',
    "missing_key": frame({k: v for k, v in GOOD.items() if k != "q"}),
    "bad_event_type": frame({**GOOD, "e": "aggTrade"}),
    "bad_trade_id": frame({**GOOD, "t": "3735683259"}),
    "bad_trade_id_beyond_bigint": frame({**GOOD, "t": 2**64 - 1}),  # orjson reads it; a COPY would fail
    "bad_price": frame({**GOOD, "p": "-1.0"}),
    "bad_qty": frame({**GOOD, "q": "0.00000000"}),
    "bad_time": frame({**GOOD, "T": 32503680000000}),  # year 3000
    "bad_is_buyer_maker": frame({**GOOD, "m": "true"}),
    "unexpected_symbol": frame({**GOOD, "s": "DOGEUSDT"}),
    "bad_symbol": frame({**GOOD, "s": 5}),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_frames_raise_their_kind(kind):
    with pytest.raises(MalformedFrame) as error:
        parse_frame(MALFORMED[kind], SYMBOLS, NOW_MS)
    assert kind.startswith(error.value.kind)


@pytest.mark.parametrize("price", ["nan", "inf", "-inf", "1e400", "abc", "", "0"])
def test_non_finite_or_non_positive_prices_are_rejected(price):
    with pytest.raises(MalformedFrame):
        parse_frame(frame({**GOOD, "p": price}), SYMBOLS, NOW_MS)


def test_rest_trade_record():
    item = {"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
            "time": 1723161255342, "isBuyerMaker": True, "isBestMatch": True}
    row = parse_rest_trade("BTCUSDT", item, time.time() * 1000)
    assert row[1] == 28457 and row[3] == 4.000001 and row[5] is True
    with pytest.raises(MalformedFrame):
        parse_rest_trade("BTCUSDT", {**item, "price": None}, time.time() * 1000)


def test_combined_stream_url():
    assert combined_stream_url("wss://stream.binance.com:9443", ("BTCUSDT", "ETHUSDT")) == \
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
