"""Reading the recorded Binance capture format of ../shared/data (shared by tests and benches)."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterator

import orjson


def capture_lines(paths: list[Path]) -> list[tuple[int, str]]:
    """(receive ns, frame text) of every stream frame, merged in arrival order (stable sort)."""
    lines: list[tuple[int, str]] = []
    for path in paths:
        with gzip.open(path, "rt") as handle:
            for line in handle:
                stamp, _, frame = line.rstrip("\n").partition(" ")
                if frame.startswith('{"stream"'):
                    lines.append((int(stamp), frame))
    lines.sort(key=lambda item: item[0])
    return lines


def capture_trades(paths: list[Path]) -> Iterator[dict]:
    """The `data` payload of every trade frame in the capture files."""
    for _, frame in capture_lines(paths):
        message = orjson.loads(frame)
        if message["stream"].endswith("@trade"):
            yield message["data"]
