"""Reading event files and turning any batch into one canonical Arrow table.

The store validates rows in SQL, so this module only has to bring every input shape
(list of dicts, polars DataFrame, Arrow table, CSV/Parquet/NDJSON file) to one schema
without losing information: identifiers are kept as text exactly as given (CSV columns are
read as strings so ``00123`` stays ``00123``), timestamps and values that arrived typed keep
their type, and those that arrived as text are parsed by the store, which reports the rows
it cannot parse.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from adloop.storage.errors import InvalidBatchError, UnreadableFileError

__all__ = ["EVENT_COLUMNS", "read_events_file", "to_canonical"]

#: Columns of an event batch; the first five are required.
EVENT_COLUMNS = (
    "event_id",
    "type",
    "campaign_id",
    "variant_id",
    "ts",
    "decision_id",
    "segment",
    "value",
)
REQUIRED_COLUMNS = EVENT_COLUMNS[:5]
_TEXT_COLUMNS = ("event_id", "type", "campaign_id", "variant_id", "decision_id", "segment")

#: Name of an optional column holding a per-row parse failure (set by the NDJSON fallback).
PARSE_ERROR_COLUMN = "_parse_error"

CANONICAL_SCHEMA = pa.schema(
    [
        ("r", pa.int64()),
        ("event_id", pa.string()),
        ("type", pa.string()),
        ("campaign_id", pa.string()),
        ("variant_id", pa.string()),
        ("decision_id", pa.string()),
        ("segment", pa.string()),
        ("ts_native", pa.timestamp("us")),
        ("ts_text", pa.string()),
        ("value_num", pa.float64()),
        ("value_text", pa.string()),
        ("parse_field", pa.string()),
        ("parse_error", pa.string()),
    ]
)


def read_events_file(path: str | Path) -> pa.Table:
    """Read a CSV, Parquet or NDJSON events file into an Arrow table.

    The format is recognised from the content (Parquet magic bytes, a leading ``{`` for
    NDJSON), falling back on the suffix. CSV columns are read as text; the store parses
    timestamps and values and reports the rows it cannot parse.

    Args:
        path: the file.

    Returns:
        The rows, one column per field in the file.

    Raises:
        UnreadableFileError: the file is missing or is none of the three formats.

    Example:
        >>> table = read_events_file("events.csv")  # doctest: +SKIP
        >>> table.column_names[:2]  # doctest: +SKIP
        ['event_id', 'type']
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableFileError(f"{path}: no such file")
    with path.open("rb") as handle:
        head = handle.read(4096)
    suffix = path.suffix.lower()
    attempts: list[str] = []
    if head.startswith(b"PAR1") or suffix == ".parquet":
        order = ("parquet", "ndjson", "csv")
    elif head.lstrip()[:1] == b"{" or suffix in (".ndjson", ".jsonl", ".json"):
        order = ("ndjson", "csv", "parquet")
    else:
        order = ("csv", "ndjson", "parquet")
    if b"\x00" in head and not head.startswith(b"PAR1"):
        raise UnreadableFileError(
            f"{path}: binary content that is not Parquet; expected CSV, Parquet or NDJSON"
        )
    for kind in order:
        try:
            table = _READERS[kind](path)
        except Exception as error:  # each reader raises its own library's errors
            attempts.append(f"{kind}: {str(error).splitlines()[0] if str(error) else error!r}")
            continue
        if not any(column in table.column_names for column in REQUIRED_COLUMNS):
            attempts.append(f"{kind}: none of the columns {', '.join(REQUIRED_COLUMNS)} found")
            continue
        return table
    raise UnreadableFileError(
        f"{path}: not a readable CSV, Parquet or NDJSON events file ({'; '.join(attempts)})"
    )


def _read_parquet(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _read_csv(path: Path) -> pa.Table:
    import pyarrow.csv as pacsv

    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header or len(header) < 2:
        raise UnreadableFileError("no header row with at least two comma-separated columns")
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        strings_can_be_null=True,
        null_values=[""],
    )
    bad_lines: list[tuple[int | None, int]] = []

    def keep_going(row: Any) -> str:
        # A line with the wrong number of fields rejects that row, not the whole file.
        bad_lines.append((row.number, row.actual_columns))
        return "skip"

    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False),  # so bad lines carry their number
        parse_options=pacsv.ParseOptions(invalid_row_handler=keep_going),
        convert_options=convert,
    )
    if not bad_lines:
        return table
    if table.num_rows == 0:
        raise UnreadableFileError(f"no line has the header's {len(header)} fields")
    return _with_bad_rows(table, bad_lines, len(header))


def _with_bad_rows(
    table: pa.Table, bad_lines: list[tuple[int | None, int]], width: int
) -> pa.Table:
    """Put a placeholder row, carrying the parse error, where each skipped CSV line was."""
    n_total = table.num_rows + len(bad_lines)
    # Line 1 is the header, so line k is data row k - 2 (exact unless a quoted value spans lines).
    bad_rows: dict[int, str] = {}
    for number, n_fields in bad_lines:
        row = number - 2 if number is not None else n_total - 1
        while row in bad_rows or row >= n_total:
            row = (row + 1) % n_total
        bad_rows[row] = f"line has {n_fields} fields, the header has {width}"
    good_positions = [row for row in range(n_total) if row not in bad_rows]
    placeholders = pa.table(
        {
            **{
                name: pa.nulls(len(bad_rows), table.schema.field(name).type)
                for name in table.column_names
            },
            PARSE_ERROR_COLUMN: pa.array(list(bad_rows.values()), pa.string()),
        }
    )
    table = table.append_column(PARSE_ERROR_COLUMN, pa.nulls(table.num_rows, pa.string()))
    merged = pa.concat_tables([table, placeholders])
    position = good_positions + list(bad_rows)
    order = sorted(range(n_total), key=position.__getitem__)
    return merged.take(pa.array(order, pa.int64()))


def _read_ndjson(path: Path) -> pa.Table:
    import pyarrow.json as pajson

    try:
        return pajson.read_json(path)
    except pa.ArrowInvalid:
        pass
    # Arrow's reader gives up on a whole file for one bad line or one mixed-type column;
    # parse line by line instead so good lines are kept and bad ones are reported as rows.
    rows: list[dict[str, Any]] = []
    n_good = 0
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                rows.append({PARSE_ERROR_COLUMN: f"not valid JSON: {error}"})
                continue
            if not isinstance(record, dict):
                rows.append({PARSE_ERROR_COLUMN: "not valid JSON: line is not a JSON object"})
                continue
            rows.append({key: _textify(value) for key, value in record.items()})
            n_good += 1
    if n_good == 0:
        raise UnreadableFileError("no line is a JSON object")
    return _table_from_rows(rows)


_READERS = {"parquet": _read_parquet, "csv": _read_csv, "ndjson": _read_ndjson}


def _textify(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value)


def _table_from_rows(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    rows = list(rows)
    names: list[str] = []
    for row in rows:
        if not isinstance(row, Mapping):
            raise InvalidBatchError(f"an event batch must hold mappings, got {type(row).__name__}")
        names.extend(key for key in row if key not in names)
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            # Mixed types in one column (a datetime here, a string there): keep them as text;
            # the store parses and validates each value.
            columns[name] = pa.array([_as_text(value) for value in values], type=pa.string())
    return pa.table(columns) if columns else pa.table({"event_id": pa.array([], pa.string())})


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return str(value)


def to_arrow(batch: Any) -> pa.Table:
    """Any supported batch shape as an Arrow table (no validation)."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if hasattr(batch, "to_arrow") and hasattr(batch, "columns"):  # polars DataFrame
        return batch.to_arrow()
    if isinstance(batch, Mapping):
        raise InvalidBatchError(
            "append_events takes a list of event dicts or a table, not a single dict"
        )
    return _table_from_rows(batch)


def _text_column(table: pa.Table, name: str) -> pa.Array:
    n = table.num_rows
    if name not in table.column_names:
        return pa.nulls(n, pa.string())
    column = table.column(name).combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string(column.type):
        return column
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([_as_text(value) for value in column.to_pylist()], type=pa.string())


def _ts_columns(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    n = table.num_rows
    if "ts" not in table.column_names:
        return pa.nulls(n, pa.timestamp("us")), pa.nulls(n, pa.string())
    column = table.column("ts").combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        # A timezone-aware column casts to naive UTC (Arrow stores UTC underneath).
        return column.cast(pa.timestamp("us")), pa.nulls(n, pa.string())
    return pa.nulls(n, pa.timestamp("us")), _text_column(table, "ts")


def _value_columns(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    n = table.num_rows
    if "value" not in table.column_names:
        return pa.nulls(n, pa.float64()), pa.nulls(n, pa.string())
    column = table.column("value").combine_chunks()
    if (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_decimal(column.type)
    ):
        return column.cast(pa.float64()), pa.nulls(n, pa.string())
    if pa.types.is_null(column.type):
        return pa.nulls(n, pa.float64()), pa.nulls(n, pa.string())
    return pa.nulls(n, pa.float64()), _text_column(table, "value")


def to_canonical(batch: Any) -> pa.Table:
    """Bring a batch to :data:`CANONICAL_SCHEMA` (row index ``r`` counts from 0)."""
    table = to_arrow(batch)
    n = table.num_rows
    ts_native, ts_text = _ts_columns(table)
    value_num, value_text = _value_columns(table)
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if PARSE_ERROR_COLUMN in table.column_names:
        parse_error = _text_column(table, PARSE_ERROR_COLUMN)
    else:
        parse_error = pa.nulls(n, pa.string())
    parse_field = pc.if_else(pc.is_null(parse_error), pa.scalar(None, pa.string()), "row")
    if missing and n:
        # Report the absent column on every row whose line did not already fail to parse.
        note = pa.scalar(f"required column {missing[0]!r} is absent from the batch")
        absent = pc.is_null(parse_error)
        parse_field = pc.if_else(absent, pa.scalar(missing[0]), parse_field)
        parse_error = pc.if_else(absent, note, parse_error)
    arrays = [pa.array(range(n), pa.int64())]
    for name in ("event_id", "type", "campaign_id", "variant_id", "decision_id", "segment"):
        arrays.append(_text_column(table, name))
    arrays += [ts_native, ts_text, value_num, value_text, parse_field, parse_error]
    return pa.Table.from_arrays(arrays, schema=CANONICAL_SCHEMA)
