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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory import columns as C
from factory.storage import Location

logger = logging.getLogger(__name__)


class InputError(ValueError):
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


PAIRS = Contract("pairs", C.PAIRS_REQUIRED, C.PAIRS_OPTIONAL,
                 string_fields=C.PAIRS_REQUIRED + C.PAIRS_OPTIONAL)
USERS = Contract("users", C.USERS_REQUIRED, C.USERS_OPTIONAL,
                 string_fields=(C.USER_ID, C.LOCALE, "age_band", "loyalty_tier"),
                 list_fields=C.USERS_LIST_FIELDS)
PRODUCTS = Contract("products", C.PRODUCTS_REQUIRED, C.PRODUCTS_OPTIONAL,
                    string_fields=(C.PRODUCT_ID, "title", "category", "brand", "currency", "description"),
                    list_fields=("selling_points",), numeric_fields=("price",), json_fields=("attributes",))


@dataclass
class TableReport:
    """What happened to a lookup table on the way in."""

    name: str
    rows_read: int = 0
    rows_kept: int = 0
    problems: dict[str, int] = field(default_factory=dict)


def list_parquet_files(loc: Location, name: str) -> list[str]:
    """The Parquet files at a file or folder location, sorted for determinism."""
    try:
        info = loc.fs.get_file_info(loc.path)
    except OSError as exc:
        raise InputError(f"{name}: cannot reach {loc.uri}: {exc}") from exc
    if info.type.name == "File":
        return [loc.path]
    if info.type.name != "Directory":
        raise InputError(f"{name}: {loc.uri} does not exist")
    from pyarrow.fs import FileSelector

    files = sorted(
        f.path for f in loc.fs.get_file_info(FileSelector(loc.path, recursive=True))
        if f.type.name == "File" and f.path.endswith(".parquet")
        and not any(part.startswith(("_", ".")) for part in f.path[len(loc.path):].split("/"))
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

    @property
    def columns(self) -> list[str]:
        """Contract columns present in any file (extra columns are ignored)."""
        present = {n for names in self.names.values() for n in names}
        return [c for c in self.contract.columns if c in present]


def check_schema(loc: Location, contract: Contract) -> ParquetInput:
    """Check every file's schema from its footer."""
    files = list_parquet_files(loc, contract.name)
    names, rows = {}, 0
    for path in files:
        shown = _display(loc, path)
        try:
            meta = pq.read_metadata(path, filesystem=loc.fs)
            schema = meta.schema.to_arrow_schema()
        except Exception as exc:  # unreadable, truncated, not Parquet
            raise InputError(f"{contract.name}: cannot read {shown}: {exc}") from exc
        _check_fields(schema, contract, shown)
        names[path] = schema.names
        rows += meta.num_rows
    return ParquetInput(loc, contract, files, names, rows)


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
        if col in contract.string_fields and not (pa.types.is_string(typ) or pa.types.is_large_string(typ)
                                                   or pa.types.is_null(typ)):
            raise InputError(f"{contract.name}: {shown}: column {col!r} must be a string, found {typ}")
        if col in contract.list_fields and not (
            (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and
            (pa.types.is_string(typ.value_type) or pa.types.is_large_string(typ.value_type))
        ) and not pa.types.is_null(typ):
            raise InputError(f"{contract.name}: {shown}: column {col!r} must be a list of strings, found {typ}")
        if col in contract.numeric_fields and not (pa.types.is_integer(typ) or pa.types.is_floating(typ)
                                                    or pa.types.is_decimal(typ)):
            raise InputError(f"{contract.name}: {shown}: column {col!r} must be numeric, found {typ}")
        if col in contract.json_fields and not (pa.types.is_map(typ) or pa.types.is_struct(typ)
                                                 or pa.types.is_string(typ) or pa.types.is_large_string(typ)
                                                 or pa.types.is_null(typ)):
            raise InputError(f"{contract.name}: {shown}: column {col!r} must be a map, struct or JSON string, "
                             f"found {typ}")


def read_lookup_table(loc: Location, contract: Contract, key: str) -> tuple[pa.Table, TableReport]:
    """Read users or products on the driver: contract columns only, one row per key.

    Attributes are normalized to a JSON string so every later stage sees one type.
    """
    checked = check_schema(loc, contract)
    tables = []
    for path in checked.files:
        present = [c for c in contract.columns if c in checked.names[path]]
        table = pq.read_table(path, filesystem=loc.fs, columns=present)
        tables.append(_conform(table, contract))
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    report = TableReport(contract.name, rows_read=table.num_rows)

    null_keys = pc.is_null(table[key])
    n_null = pc.sum(null_keys).as_py() or 0
    if n_null:
        report.problems[f"null_{key}"] = n_null
        table = table.filter(pc.invert(null_keys))
    # Keep the first row per key: a duplicated id is a data problem upstream.
    keys = table[key].to_pylist()
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    if len(first) != len(keys):
        report.problems[f"duplicate_{key}"] = len(keys) - len(first)
        table = table.take(pa.array(sorted(first.values()), pa.int64()))
    report.rows_kept = table.num_rows
    for problem, count in report.problems.items():
        logger.warning("%s: %d row(s) dropped: %s", contract.name, count, problem)
    return table, report


def _conform(table: pa.Table, contract: Contract) -> pa.Table:
    """Add absent optional columns as nulls and give every column its contract type."""
    target = {
        **{c: pa.string() for c in contract.string_fields},
        **{c: pa.list_(pa.string()) for c in contract.list_fields},
        **{c: pa.float64() for c in contract.numeric_fields},
        **{c: pa.string() for c in contract.json_fields},
    }
    arrays, names = [], []
    for col in contract.columns:
        typ = target.get(col, pa.string())
        if col not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, typ))
        elif col in contract.json_fields:
            arrays.append(_as_json_text(table[col]))
        else:
            arrays.append(table[col].cast(typ))
        names.append(col)
    return pa.table(arrays, names=names)


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
