"""Reading the three inputs and holding them to the input contract.

Schema problems stop the job on the driver, before any engine time, with a
message naming the input, the file and the column. Row problems in the
lookup tables (a null id, a duplicate id) are counted and reported; row
problems in the pairs become dead letters further down the pipeline.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory import columns as C
from factory.errors import StorageError, UsageError
from factory.storage import Location, is_transient, named_failure, retry_io

logger = logging.getLogger(__name__)


class InputError(UsageError):
    """An input that breaks the contract; the message says where."""


@dataclass(frozen=True)
class Contract:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    string_fields: tuple[str, ...] = ()
    list_fields: tuple[str, ...] = ()
    numeric_fields: tuple[str, ...] = ()
    # Key/value fields: a map, a struct or a JSON object string; read as JSON text.
    json_fields: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional

    def type_of(self, column: str) -> pa.DataType:
        """The Arrow type a checked table gives ``column``."""
        if column in self.list_fields:
            return pa.list_(pa.string())
        return pa.float64() if column in self.numeric_fields else pa.string()


PAIRS = Contract(
    "pairs", C.PAIRS_REQUIRED, C.PAIRS_OPTIONAL, string_fields=C.PAIRS_REQUIRED + C.PAIRS_OPTIONAL
)
USERS = Contract(
    "users",
    C.USERS_REQUIRED,
    C.USERS_OPTIONAL,
    string_fields=(C.USER_ID, C.LOCALE, "age_band", "loyalty_tier"),
    list_fields=C.USERS_LIST_FIELDS,
)
PRODUCTS = Contract(
    "products",
    C.PRODUCTS_REQUIRED,
    C.PRODUCTS_OPTIONAL,
    string_fields=(C.PRODUCT_ID, "title", "category", "brand", "currency", "description"),
    list_fields=("selling_points",),
    numeric_fields=("price",),
    json_fields=("attributes",),
)


@dataclass
class TableReport:
    """What happened to a lookup table on the way in."""

    name: str
    rows_read: int = 0
    rows_kept: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    # Each dropped row: its key, reason, file and row number (for the dead letters).
    rejects: list[dict] = field(default_factory=list, repr=False)
    # Values with broken UTF-8 outside the key, replaced (U+FFFD), per column.
    repaired_text: dict[str, int] = field(default_factory=dict)

    def log(self) -> None:
        """What was dropped or repaired, as warnings (on the driver: a table
        read by a Ray task reports through its returned report)."""
        for problem, count in self.problems.items():
            logger.warning("%s: %d row(s) dropped: %s", self.name, count, problem)
        for column, count in self.repaired_text.items():
            logger.warning("%s: %d value(s) of %r had broken UTF-8, replaced", self.name, count, column)


# An id is a short key; anything longer is a broken export, not an id.
MAX_KEY_BYTES = 256


def malformed_reasons(
    column: pa.ChunkedArray | pa.Array, name: str, max_bytes: int = MAX_KEY_BYTES, required: bool = True
) -> list[Optional[str]]:
    """Per value: why it cannot be a key (``null_<name>``, ``invalid_utf8_<name>``,
    ``too_long_<name>``, ``control_characters_<name>``), or None."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
    n = len(column)
    reasons: list[Optional[str]] = [None] * n
    if n == 0:
        return reasons
    raw = column.cast(pa.binary()) if not pa.types.is_binary(column.type) else column
    nulls = pc.is_null(raw).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.binary_length(raw), 0).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(nulls if required else np.zeros(n, bool)):
        reasons[i] = f"null_{name}"
    for i in np.flatnonzero(lengths > max_bytes):
        reasons[i] = f"too_long_{name}"
    # UTF-8 and control characters: only a Python pass tells which row, so it
    # runs on the (short) keys only, and only when a cheap check fails.
    try:
        column.cast(pa.string()).validate(full=True)
        bad_utf8 = False
    except (pa.ArrowInvalid, pa.ArrowException):
        bad_utf8 = True
    try:
        needs_scan = bad_utf8 or bool(
            pc.any(pc.match_substring_regex(raw, pattern=r"[\x00-\x1f\x7f]")).as_py()
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        needs_scan = True
    if needs_scan:
        for i, value in enumerate(raw.to_pylist()):
            if value is None or reasons[i] is not None:
                continue
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                reasons[i] = f"invalid_utf8_{name}"
                continue
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
                reasons[i] = f"control_characters_{name}"
    return reasons


def _store_failure(exc: BaseException, uri: str) -> Optional[StorageError]:
    """A store that was busy or down when an input was read is not a broken
    input: it fails the run as storage (exit 1, worth a retry), not as a
    mistake to fix (exit 2)."""
    return named_failure(uri, exc) if is_transient(exc) else None


def list_parquet_files(loc: Location, name: str) -> list[str]:
    """The Parquet files at a file or folder location, sorted for determinism."""
    try:
        info = loc.fs.get_file_info(loc.path)
    except OSError as exc:
        raise _store_failure(exc, loc.uri) or InputError(f"{name}: cannot reach {loc.uri}: {exc}") from exc
    if info.type.name == "File":
        return [loc.path]
    if info.type.name != "Directory":
        raise InputError(f"{name}: {loc.uri} does not exist")
    from pyarrow.fs import FileSelector

    files = sorted(
        f.path
        for f in loc.fs.get_file_info(FileSelector(loc.path, recursive=True))
        if f.type.name == "File"
        and f.path.endswith(".parquet")
        and not any(part.startswith(("_", ".")) for part in f.path[len(loc.path) :].split("/"))
    )
    if not files:
        raise InputError(f"{name}: no .parquet files under {loc.uri}")
    return files


def _display(loc: Location, path: str) -> str:
    return f"s3://{path}" if loc.is_s3 else path


@dataclass(frozen=True)
class ParquetInput:
    """An input's files as checked: one footer read per file, reused by every later step."""

    loc: Location
    contract: Contract
    files: list[str]
    names: dict[str, list[str]]  # file -> its column names
    rows: int
    row_groups: dict[str, list[int]] = field(default_factory=dict)  # file -> rows per row group

    @property
    def columns(self) -> list[str]:
        """Contract columns present in any file (extra columns are ignored)."""
        present = {n for names in self.names.values() for n in names}
        return [c for c in self.contract.columns if c in present]


def check_schema(loc: Location, contract: Contract) -> ParquetInput:
    """Check every file's schema from its footer."""
    files = list_parquet_files(loc, contract.name)
    names, rows, groups = {}, 0, {}
    for path in files:
        shown = _display(loc, path)
        try:
            meta = retry_io(
                pq.read_metadata, path, filesystem=loc.fs, attempts=loc.s3.max_attempts if loc.s3 else 1
            )
            schema = meta.schema.to_arrow_schema()
        except Exception as exc:  # unreadable, truncated, not Parquet
            failed = _store_failure(exc, shown)
            raise failed or InputError(f"{contract.name}: cannot read {shown}: {exc}") from exc
        _check_fields(schema, contract, shown)
        names[path] = schema.names
        rows += meta.num_rows
        groups[path] = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return ParquetInput(loc, contract, files, names, rows, groups)


def _check_fields(schema: pa.Schema, contract: Contract, shown: str) -> None:
    names = set(schema.names)
    missing = [c for c in contract.required if c not in names]
    if missing:
        raise InputError(
            f"{contract.name}: {shown}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(schema.names)})"
        )
    for col in contract.columns:
        if col not in names:
            continue
        typ = schema.field(col).type
        if col in contract.string_fields and not (
            pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)
        ):
            raise InputError(f"{contract.name}: {shown}: column {col!r} must be a string, found {typ}")
        if (
            col in contract.list_fields
            and not (
                (pa.types.is_list(typ) or pa.types.is_large_list(typ))
                and (pa.types.is_string(typ.value_type) or pa.types.is_large_string(typ.value_type))
            )
            and not pa.types.is_null(typ)
        ):
            raise InputError(
                f"{contract.name}: {shown}: column {col!r} must be a list of strings, found {typ}"
            )
        if col in contract.numeric_fields and not (
            pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
        ):
            raise InputError(f"{contract.name}: {shown}: column {col!r} must be numeric, found {typ}")
        if col in contract.json_fields and not (
            pa.types.is_map(typ)
            or pa.types.is_struct(typ)
            or pa.types.is_string(typ)
            or pa.types.is_large_string(typ)
            or pa.types.is_null(typ)
        ):
            raise InputError(
                f"{contract.name}: {shown}: column {col!r} must be a map, struct or JSON string, found {typ}"
            )


def read_lookup_table(loc: Location, contract: Contract, key: str) -> tuple[pa.Table, TableReport]:
    """Read users or products: contract columns only, one row per key (the
    caller logs the report: ``TableReport.log``).

    A row whose key is null, malformed or a repeat of an earlier row's is
    dropped and reported with its file and row number. Broken UTF-8 elsewhere
    in a row is replaced, not fatal: one bad character in a description must
    not cost the product. Attributes are normalized to a JSON string so every
    later stage sees one type.
    """
    checked = check_schema(loc, contract)
    attempts = loc.s3.max_attempts if loc.s3 else 1
    tables, shown_files = [], []
    for path in checked.files:
        present = [c for c in contract.columns if c in checked.names[path]]
        shown_files.append(_display(loc, path))
        try:
            table = retry_io(pq.read_table, path, filesystem=loc.fs, columns=present, attempts=attempts)
        except (OSError, pa.ArrowException) as exc:  # a sound footer over a damaged page
            raise _store_failure(exc, shown_files[-1]) or InputError(
                f"{contract.name}: cannot read {shown_files[-1]}: {exc}"
            ) from exc
        tables.append(table)
    # Where each file's rows start in the concatenation: a rejected row's file and row, from its position.
    starts = np.cumsum([0] + [t.num_rows for t in tables])
    report = TableReport(contract.name, rows_read=int(starts[-1]))
    keys = pa.chunked_array(
        [
            t[key].cast(pa.binary()) if key in t.column_names else pa.nulls(t.num_rows, pa.binary())
            for t in tables
        ],
        pa.binary(),
    )
    reasons = malformed_reasons(keys, key)
    # Columnar from here: at 1M users per-row Python lists and a set of every
    # key cost the driver more than the table itself (benchmarks/driver_users.py).
    well_formed = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
    first = np.zeros(len(reasons), dtype=bool)
    at = np.flatnonzero(well_formed)
    if len(at):
        firsts = (
            pa.table({"k": keys.take(pa.array(at)), "i": pa.array(at)})
            .group_by("k", use_threads=False)
            .aggregate([("i", "min")])["i_min"]
        )
        first[firsts.to_numpy()] = True
    for i in np.flatnonzero(well_formed & ~first):
        reasons[i] = f"duplicate_{key}"
    keep = well_formed & first
    for i in np.flatnonzero(~keep):
        r = reasons[i]
        report.problems[r] = report.problems.get(r, 0) + 1
        f = int(np.searchsorted(starts, i, side="right")) - 1
        report.rejects.append(
            {
                key: _shown_key(keys[int(i)].as_py()),
                "reason": r,
                "source": shown_files[f],
                "source_row": int(i - starts[f]),
            }
        )
    table = _conform(
        pa.concat_tables([_conform_raw(t, contract) for t in tables], promote_options="permissive")
        if len(tables) > 1
        else _conform_raw(tables[0], contract),
        contract,
        report,
    )
    if not keep.all():  # a copy of the whole table only when there is something to drop
        table = table.filter(pa.array(keep))
    report.rows_kept = table.num_rows
    return table, report


def _shown_key(value: Optional[bytes]) -> Optional[str]:
    """A rejected key as the dead letters show it: valid text, at most 256 bytes."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    return text if len(text) <= MAX_KEY_BYTES else text[:MAX_KEY_BYTES] + "…"


def _conform_raw(table: pa.Table, contract: Contract) -> pa.Table:
    """Absent optional columns as nulls, so files with different columns concatenate."""
    for col in contract.columns:
        if col not in table.column_names:
            table = table.append_column(col, pa.nulls(table.num_rows))
    return table.select(list(contract.columns))


def _conform(table: pa.Table, contract: Contract, report: Optional[TableReport] = None) -> pa.Table:
    """Add absent optional columns as nulls and give every column its contract type."""
    arrays, names = [], []
    for col in contract.columns:
        typ = contract.type_of(col)
        if col not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, typ))
        elif col in contract.json_fields:
            arrays.append(_as_json_text(_valid_text(table[col], col, report)))
        else:
            arrays.append(_valid_text(table[col], col, report).cast(typ))
        names.append(col)
    return pa.table(arrays, names=names)


def _valid_text(column: pa.ChunkedArray, name: str, report: Optional[TableReport]) -> pa.ChunkedArray:
    """``column`` with any broken UTF-8 replaced (U+FFFD), counted in ``report``."""
    typ = column.type
    is_text = pa.types.is_string(typ) or pa.types.is_large_string(typ)
    is_text_list = pa.types.is_list(typ) and (
        pa.types.is_string(typ.value_type) or pa.types.is_large_string(typ.value_type)
    )
    if not (is_text or is_text_list):
        return column
    try:
        column.validate(full=True)
        return column
    except pa.ArrowInvalid:
        pass
    fixed, count = [], 0

    def repair(value):
        nonlocal count
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            count += 1
            return value.decode("utf-8", "replace")

    binary = column.cast(pa.list_(pa.binary()) if is_text_list else pa.binary())
    for value in binary.to_pylist():
        fixed.append(
            [repair(v) for v in value]
            if is_text_list and value is not None
            else (None if value is None else repair(value))
        )
    if report is not None:
        report.repaired_text[name] = report.repaired_text.get(name, 0) + count
    return pa.chunked_array([pa.array(fixed, pa.list_(pa.string()) if is_text_list else pa.string())])


def _as_json_text(column: pa.ChunkedArray) -> pa.Array:
    typ = column.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return column.cast(pa.string())
    values = []
    for v in column.to_pylist():
        if v is None:
            values.append(None)
        elif isinstance(v, list):  # map<k, v> arrives as [(k, v), ...]
            values.append(json.dumps({str(k): val for k, val in v}, ensure_ascii=False))
        else:
            values.append(json.dumps(v, ensure_ascii=False, default=str))
    return pa.array(values, pa.string())
