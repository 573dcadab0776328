"""Uploaded OHLC CSVs: decode, detect or map columns, validate row by row, and report per kind of bad row.

Pure (no Dash, no database): `parse_upload` takes what dcc.Upload sends, `parse_ohlc_csv` the file bytes.
Nothing in a file is ever evaluated: cells are read as text by the csv module and converted explicitly.
Storage is `database.store_uploaded_bars`; an uploaded dataset is shown as the symbol `upload:NAME`.
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

MAX_UPLOAD_BYTES = 20 * 1024 * 1024      # the file itself (before base64)
MAX_UPLOAD_ROWS = 500_000
MAX_COLUMNS = 64
MAX_FIELD_CHARS = 200                    # a longer cell is not a number or a time
SNIFF_BYTES = 64 * 1024
LINES_SHOWN = 5                          # line numbers listed per kind of problem
ECHO_CHARS = 80                          # longest user text echoed back
ALLOWED_EXTENSIONS = (".csv", ".txt", ".tsv")
UPLOAD_PREFIX = "upload:"
UPLOAD_LABEL = " (uploaded)"
NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EPOCH_SECONDS_BELOW = 1e11              # 1e11 s = year 5138; 1e11 ms = 1973
EPOCH_MILLIS_BELOW = 1e14
EPOCH_MICROS_BELOW = 1e17
MIN_TIME = pd.Timestamp("1970-01-01", tz="UTC")
MAX_TIME = pd.Timestamp("2100-01-01", tz="UTC")

PRICE_FIELDS = ("open", "high", "low", "close")
AMOUNT_FIELDS = ("volume", "quote_volume", "trade_count", "taker_buy_volume")
FIELDS = ("time", *PRICE_FIELDS, *AMOUNT_FIELDS)
# normalised header name -> field (header: lower case, runs of non-alphanumerics -> "_")
ALIASES: dict[str, str] = {
    **dict.fromkeys(("time", "timestamp", "date", "open_time", "datetime", "ts", "date_time", "time_utc",
                     "timestamp_utc", "unix", "opentime", "kline_open_time"), "time"),
    **dict.fromkeys(("open", "o", "open_price"), "open"),
    **dict.fromkeys(("high", "h", "high_price"), "high"),
    **dict.fromkeys(("low", "l", "low_price"), "low"),
    **dict.fromkeys(("close", "c", "price", "close_price", "last"), "close"),
    **dict.fromkeys(("volume", "vol", "v", "base_volume", "volume_base", "base_asset_volume"), "volume"),
    **dict.fromkeys(("quote_volume", "quote_asset_volume", "quote_vol", "volume_quote", "turnover"), "quote_volume"),
    **dict.fromkeys(("trades", "count", "trade_count", "number_of_trades", "num_trades", "tradecount"),
                    "trade_count"),
    **dict.fromkeys(("taker_buy_volume", "taker_buy_base_asset_volume", "taker_buy_base_volume"),
                    "taker_buy_volume"),
}
# Binance kline files without a header (data.binance.vision): 12 columns in this order
BINANCE_KLINE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                         "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore")

# kind -> what is wrong with such a row (the user-facing explanation)
PROBLEM_TEXT = {
    "field_count": "wrong number of fields",
    "bad_time": "time not parseable (ISO-8601, or epoch seconds/ms/µs expected)",
    "bad_price": "open/high/low/close not a finite positive number",
    "inconsistent_ohlc": "high below max(open, close) or low above min(open, close)",
    "bad_volume": "volume/quote volume/trade count negative or not a finite number",
    "duplicate_time": "duplicate time (the first row with that time is kept)",
}


class UploadRejected(ValueError):
    """The whole upload is refused; the message says why in one line."""


@dataclass
class Problem:
    """Bad rows of one kind: how many and the first few line numbers (1 = the file's first line)."""

    count: int = 0
    lines: list[int] = field(default_factory=list)

    def add(self, line: int) -> None:
        """Count one more bad row."""
        self.count += 1
        if len(self.lines) < LINES_SHOWN:
            self.lines.append(line)


@dataclass
class UploadResult:
    """Outcome of one upload: the valid bars (UTC index `ts`), per-kind problems, warnings or a rejection."""

    name: str = ""
    filename: str = ""
    frame: pd.DataFrame | None = None
    columns: dict[str, str] = field(default_factory=dict)     # field -> CSV column it was read from
    rows_read: int = 0
    problems: dict[str, Problem] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether there are valid bars to store."""
        return self.error is None and self.frame is not None and len(self.frame) > 0

    @property
    def rows_bad(self) -> int:
        """Rows rejected, all kinds."""
        return sum(p.count for p in self.problems.values())

    def messages(self) -> list[str]:
        """One line for the outcome, then one per kind of bad row and per warning."""
        if self.error:
            return [f"Upload rejected: {self.error}"]
        stored = len(self.frame) if self.frame is not None else 0
        head = (f"{safe_text(self.name)}: {stored:,} bars from {safe_text(self.filename)} "
                f"({self.rows_read:,} rows read, {self.rows_bad:,} rejected)")
        lines = [head]
        for kind, problem in self.problems.items():
            shown = ", ".join(str(n) for n in problem.lines) + (", …" if problem.count > len(problem.lines) else "")
            lines.append(f"{problem.count:,} rows: {PROBLEM_TEXT[kind]} (lines {shown})")
        return lines + [f"Note: {w}" for w in self.warnings]


def safe_text(value: object, limit: int = ECHO_CHARS) -> str:
    """User text fit to echo: printable, short, and never starting like a spreadsheet formula."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))[:limit]
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def upload_symbol(name: str) -> str:
    """Dataset name -> the symbol the dashboard uses for it."""
    return UPLOAD_PREFIX + name


def dataset_of(symbol: str | None) -> str | None:
    """'upload:NAME' -> NAME (if a valid name), anything else -> None."""
    if not isinstance(symbol, str) or not symbol.startswith(UPLOAD_PREFIX):
        return None
    name = symbol[len(UPLOAD_PREFIX):]
    return name if NAME_RE.match(name) else None


def dropdown_option(name: str) -> dict[str, str]:
    """A symbol dropdown entry for an uploaded dataset."""
    return {"label": name + UPLOAD_LABEL, "value": upload_symbol(name)}


def default_name(filename: str | None) -> str:
    """A dataset name from a file name ('BTCUSDT-1m 2024.csv' -> 'BTCUSDT-1m_2024')."""
    stem = (filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", stem).strip("_")[:40] or "upload"


def check_name(name: str | None) -> str:
    """A dataset name matching NAME_RE, else UploadRejected."""
    value = (name or "").strip()
    if not NAME_RE.match(value):
        raise UploadRejected(f"dataset name {safe_text(value)!r} must be 1-40 characters: letters, digits, _ or -")
    return value


# ---------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------
def decode_contents(contents: str | None) -> bytes:
    """dcc.Upload's 'data:<mime>;base64,<data>' -> bytes, refusing anything over MAX_UPLOAD_BYTES first."""
    if not contents or "," not in contents:
        raise UploadRejected("no file received")
    header, encoded = contents.split(",", 1)
    if not header.endswith(";base64"):
        raise UploadRejected("the file did not arrive base64-encoded")
    if len(encoded) * 3 // 4 > MAX_UPLOAD_BYTES + 2:
        raise UploadRejected(f"file larger than the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise UploadRejected("the file did not arrive as valid base64") from None


def decode_text(data: bytes, filename: str) -> str:
    """Bytes -> text of a CSV file, refusing oversize, binary and non-UTF-8 content."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRejected(f"file larger than the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit")
    lowered = (filename or "").lower()
    if "." in lowered and not lowered.endswith(ALLOWED_EXTENSIONS):
        raise UploadRejected(f"{safe_text(filename)} is not a CSV file (expected {', '.join(ALLOWED_EXTENSIONS)})")
    if b"\x00" in data[:SNIFF_BYTES]:
        raise UploadRejected("the file is binary, not CSV text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UploadRejected("the file is not UTF-8 text (binary, or another encoding)") from None
    if not text.strip():
        raise UploadRejected("the file is empty")
    return text


def _normalise(header: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", header.strip().lower()).strip("_")


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(text[:SNIFF_BYTES], delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def detect_columns(header: list[str], mapping: Mapping[str, str | int] | None = None) -> dict[str, int]:
    """field -> column index: an explicit mapping (field -> column name or index) wins over the aliases."""
    normalised = [_normalise(h) for h in header]
    found: dict[str, int] = {}
    for index, name in enumerate(normalised):
        key = ALIASES.get(name)
        if key is not None and key not in found:
            found[key] = index
    for key, column in (mapping or {}).items():
        if key not in FIELDS:
            raise UploadRejected(f"mapping names unknown field {safe_text(key)!r} (fields: {', '.join(FIELDS)})")
        if isinstance(column, int) and 0 <= column < len(header):
            found[key] = column
        elif isinstance(column, str) and _normalise(column) in normalised:
            found[key] = normalised.index(_normalise(column))
        else:
            raise UploadRejected(f"mapped column {safe_text(column)!r} for {key} is not in the file")
    missing = [k for k in ("time", "close") if k not in found]
    if missing:
        shown = ", ".join(safe_text(h, 30) for h in header[:12])
        raise UploadRejected(f"no {' or '.join(missing)} column found among: {shown} "
                             "(name it time/timestamp/date and close/price, or map the columns)")
    return found


# ---------------------------------------------------------------------------------------------------
# Parsing + validation
# ---------------------------------------------------------------------------------------------------
def parse_times(raw: pd.Series) -> pd.Series:
    """Text -> UTC timestamps: epoch s/ms/µs by magnitude, else ISO-8601 (naive = UTC); NaT if neither."""
    numbers = pd.to_numeric(raw.where(raw.str.fullmatch(r"\s*-?\d+(\.\d+)?\s*")), errors="coerce")
    magnitude = numbers.abs()
    scale = np.select([magnitude < EPOCH_SECONDS_BELOW, magnitude < EPOCH_MILLIS_BELOW,
                       magnitude < EPOCH_MICROS_BELOW], [1e6, 1e3, 1.0], np.nan)
    micros = (numbers * scale).round()
    from_epoch = pd.to_datetime(micros.where(micros.abs() < 2**62), unit="us", utc=True, errors="coerce")
    text = raw.where(numbers.isna())
    from_iso = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce") if text.notna().any() else None
    times = from_epoch if from_iso is None else from_epoch.fillna(from_iso)
    return times.where((times >= MIN_TIME) & (times < MAX_TIME))


def _numbers(raw: pd.Series | None, length: int) -> np.ndarray:
    if raw is None:
        return np.full(length, np.nan)
    return pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=float)


def _read_rows(text: str, width_limit: int) -> tuple[list[str], list[list[str]], list[int], bool]:
    """(header, rows, line number of each row, whether the first line was a header)."""
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text))
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    has_header = True
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            if len(row) > width_limit:
                raise UploadRejected(f"{len(row)} columns: more than the {width_limit} allowed")
            header = row
            has_header = not _is_number(row[0].strip())
            if has_header:
                continue
        if len(rows) >= MAX_UPLOAD_ROWS:
            raise UploadRejected(f"more than {MAX_UPLOAD_ROWS:,} rows: split the file")
        rows.append(row)
        lines.append(reader.line_num)
    if header is None:
        raise UploadRejected("the file has no rows")
    return header, rows, lines, has_header


def parse_ohlc_csv(data: bytes, filename: str, mapping: Mapping[str, str | int] | None = None,
                   name: str = "") -> UploadResult:
    """Parse and validate an OHLC CSV; bad rows are counted per kind and left out of `frame`."""
    result = UploadResult(name=name, filename=filename)
    try:
        text = decode_text(data, filename)
        header, rows, lines, has_header = _read_rows(text, MAX_COLUMNS)
        if not has_header:
            if len(header) != len(BINANCE_KLINE_COLUMNS) and not mapping:
                raise UploadRejected("no header line: add one (time,open,high,low,close,volume) or map the columns")
            names = list(BINANCE_KLINE_COLUMNS) if len(header) == len(BINANCE_KLINE_COLUMNS) else \
                [str(i) for i in range(len(header))]
            header = names
        columns = detect_columns(header, mapping)
    except UploadRejected as rejected:
        result.error = str(rejected)
        return result
    result.columns = {key: safe_text(header[i], 40) for key, i in columns.items()}
    result.rows_read = len(rows)
    result.frame, result.problems, result.warnings = validate_rows(rows, lines, len(header), columns)
    if not result.ok and result.error is None:
        result.error = "no valid rows" + (f" ({result.rows_bad:,} rejected: "
                                          + "; ".join(m for m in result.messages()[1:]) + ")" if result.rows_bad else "")
    return result


def validate_rows(rows: list[list[str]], lines: list[int], width: int, columns: dict[str, int]
                  ) -> tuple[pd.DataFrame, dict[str, Problem], list[str]]:
    """Rows of text -> (valid bars sorted by time, problems by kind, warnings)."""
    n = len(rows)
    line_numbers = np.asarray(lines, dtype=np.int64)
    kind = np.full(n, "", dtype=object)              # first problem of each row ('' = good)
    width_ok = np.fromiter((len(r) == width for r in rows), dtype=bool, count=n)
    kind[~width_ok] = "field_count"
    padded = [r if ok else (r + [""] * width)[:width] for r, ok in zip(rows, width_ok)]
    table = pd.DataFrame(padded, dtype=str) if n else pd.DataFrame(columns=range(width), dtype=str)
    cell = {key: table[i].str.slice(0, MAX_FIELD_CHARS) for key, i in columns.items()}

    times = parse_times(cell["time"]) if n else pd.Series([], dtype="datetime64[ns, UTC]")
    close = _numbers(cell["close"], n)
    prices = {key: (_numbers(cell[key], n) if key in cell else close) for key in PRICE_FIELDS}
    amounts = {key: _numbers(cell.get(key), n) for key in AMOUNT_FIELDS}
    warnings = [f"no {key} column: {key} = close" for key in ("open", "high", "low") if key not in cell]

    def mark(bad: np.ndarray, name: str) -> None:
        kind[(kind == "") & bad] = name

    mark(times.isna().to_numpy(), "bad_time")
    price_matrix = np.column_stack([prices[k] for k in PRICE_FIELDS]) if n else np.empty((0, 4))
    with np.errstate(invalid="ignore"):
        mark(~(np.isfinite(price_matrix) & (price_matrix > 0)).all(axis=1), "bad_price")
        o, h, lo, c = (prices[k] for k in PRICE_FIELDS)
        mark((h < np.maximum(o, c)) | (lo > np.minimum(o, c)), "inconsistent_ohlc")
        for key in AMOUNT_FIELDS:
            if key in cell:
                value = amounts[key]
                mark(~np.isfinite(value) | (value < 0), "bad_volume")
    good = kind == ""
    duplicated = np.zeros(n, dtype=bool)
    duplicated[good] = pd.Index(times[good]).duplicated(keep="first")
    mark(duplicated, "duplicate_time")

    problems: dict[str, Problem] = {}
    for name in PROBLEM_TEXT:
        where = np.flatnonzero(kind == name)
        if len(where):
            problems[name] = Problem(count=len(where), lines=[int(x) for x in line_numbers[where[:LINES_SHOWN]]])

    keep = kind == ""
    frame = pd.DataFrame({key: prices[key][keep] for key in PRICE_FIELDS},
                         index=pd.DatetimeIndex(times[keep], name="ts"))
    frame["volume"] = np.nan_to_num(amounts["volume"][keep], nan=0.0) if "volume" in cell else 0.0
    frame["quote_volume"] = amounts["quote_volume"][keep] if "quote_volume" in cell else np.nan
    frame["trade_count"] = np.nan_to_num(amounts["trade_count"][keep], nan=0.0).round().astype("int64") \
        if "trade_count" in cell else 0
    frame["taker_buy_volume"] = amounts["taker_buy_volume"][keep] if "taker_buy_volume" in cell else 0.0
    if not frame.index.is_monotonic_increasing:
        warnings.append("rows were not in time order: sorted")
        frame = frame.sort_index(kind="stable")
    if "volume" not in cell:
        warnings.append("no volume column: volume = 0")
    return frame, problems, warnings


def infer_bar_seconds(index: pd.DatetimeIndex) -> int:
    """Median spacing of the bars in whole seconds (at least 1)."""
    if len(index) < 2:
        return 1
    steps = np.diff(index.as_unit("ns").asi8) / 1e9
    return max(1, int(round(float(np.median(steps)))))


def parse_upload(contents: str | None, filename: str | None, name: str | None,
                 mapping: Mapping[str, str | int] | None = None) -> UploadResult:
    """dcc.Upload contents + chosen dataset name -> UploadResult (rejected with a reason, or bars to store)."""
    try:
        dataset = check_name(name)
        data = decode_contents(contents)
    except UploadRejected as rejected:
        return UploadResult(name=(name or "").strip(), filename=filename or "", error=str(rejected))
    return parse_ohlc_csv(data, filename or "upload.csv", mapping, name=dataset)
