"""The product-facts table: one row per (product_id, content_hash), local or S3.

Layout under the facts location::

    part-<digest>.parquet     one file per write (an extraction run writes one
                              or more); <digest> hashes the keys it holds, so
                              the same extraction written twice is one file

A row is keyed by the product id and ``content_hash``, the SHA-256 of the
canonical JSON of every product field the extractor reads. A product whose
content has not changed keeps its hash and its facts; an edited one gets a
new hash and is extracted again. Reading returns the latest row per key (a
failed extraction retried later is superseded). ``compact()`` folds the parts
into one; readers deduplicate, so a crash half-way through loses nothing.

Every write is one whole object (``storage.write_parquet``), never a partial file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory import columns as C
from factory.storage import Location, list_files, read_bytes, retry_io, s3_client, write_parquet

logger = logging.getLogger(__name__)

CONTENT_HASH = "content_hash"
STATUS = "status"
FACTS = "facts"
REASON = "reason"
DROPPED = "dropped"
MODEL = "model"
EXTRACTOR_VERSION = "extractor_version"
EXTRACTED_AT = "extracted_at"

OK, FAILED = "ok", "failed"

# Product fields the extractor reads, in the order the hash sees them.
# ``review_snippets`` is optional (list<string>); a column that is absent or
# empty hashes the same as no column, so adding it changes no hash.
CONTENT_FIELDS = (
    "title",
    "brand",
    "category",
    "price",
    "currency",
    "description",
    "attributes",
    "selling_points",
    "review_snippets",
)

FACTS_SCHEMA = pa.schema(
    [
        (C.PRODUCT_ID, pa.string()),
        (CONTENT_HASH, pa.string()),
        (STATUS, pa.string()),  # ok | failed
        (FACTS, pa.string()),  # ProductFacts as JSON; null when failed
        (REASON, pa.string()),  # why it failed; null when ok
        (DROPPED, pa.list_(pa.string())),  # what the post-filter removed, as codes (never the text)
        (MODEL, pa.string()),
        (EXTRACTOR_VERSION, pa.string()),
        (EXTRACTED_AT, pa.timestamp("us", tz="UTC")),
    ]
)
KEY = (C.PRODUCT_ID, CONTENT_HASH)


def _plain(value: Any) -> Any:
    """Arrow/numpy values as plain JSON values; empty and NaN as None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        items = [v for v in (_plain(x) for x in value) if v is not None]
        return items or None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def canonical_content(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the extractor reads, as the hash sees them: absent, null and
    empty values left out; attributes parsed (key order does not matter);
    the price to the cent."""
    content: dict[str, Any] = {}
    for name in CONTENT_FIELDS:
        value = _plain(record.get(name))
        if value is None:
            continue
        if name == "price":
            value = f"{float(value):.2f}"
        elif name == "attributes" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # free text stays text
        content[name] = value
    return content


def canonical_json(record: Mapping[str, Any]) -> str:
    return json.dumps(canonical_content(record), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the product's canonical content."""
    return hashlib.sha256(canonical_json(record).encode("utf-8")).hexdigest()


def with_content_hash(products: pa.Table) -> pa.Table:
    """``products`` plus a ``content_hash`` column."""
    hashes = [
        content_hash(r)
        for r in products.select([c for c in CONTENT_FIELDS if c in products.column_names]).to_pylist()
    ]
    if CONTENT_HASH in products.column_names:
        products = products.drop_columns([CONTENT_HASH])
    return products.append_column(CONTENT_HASH, pa.array(hashes, pa.string()))


def facts_rows(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) as a table of the store's schema; missing fields null."""
    return pa.Table.from_pylist(
        [{f.name: r.get(f.name) for f in FACTS_SCHEMA} for r in rows], schema=FACTS_SCHEMA
    )


def part_name(table: pa.Table) -> str:
    """``part-<digest>.parquet``: the digest of the keys, statuses and facts the part holds."""
    h = hashlib.sha256()
    for pid, chash, status, facts in sorted(
        zip(*(table[c].to_pylist() for c in (*KEY, STATUS, FACTS))),
        key=lambda r: (r[0], r[1], r[2], r[3] or ""),
    ):
        h.update(f"{pid}\0{chash}\0{status}\0{facts or ''}\n".encode())
    return f"part-{h.hexdigest()[:24]}.parquet"


class FactsStore:
    """The facts table at ``location`` (a local folder or an ``s3://`` prefix)."""

    def __init__(self, location: Location):
        self.location = location

    def _parts(self) -> list[str]:
        return [i.path for i in list_files(self.location, ".parquet")]

    def _read_parts(self, columns: Optional[list[str]] = None) -> pa.Table:
        wanted = columns or FACTS_SCHEMA.names
        schema = pa.schema([FACTS_SCHEMA.field(c) for c in wanted])
        tables = []
        for path in self._parts():
            try:
                data = read_bytes(Location(self.location.fs, path, path, self.location.s3))
                part = pq.ParquetFile(pa.BufferReader(data))
            except Exception as exc:  # noqa: BLE001 - name the file whatever went wrong
                raise ValueError(f"facts table: cannot read {self._shown(path)}: {exc}") from exc
            missing = [c for c in wanted if c not in part.schema_arrow.names]
            if missing:
                raise ValueError(f"facts table: {self._shown(path)} has no column(s) {', '.join(missing)}")
            tables.append(part.read(columns=wanted).cast(schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def _shown(self, path: str) -> str:
        return f"s3://{path}" if self.location.is_s3 else path

    def read(self, columns: Optional[list[str]] = None) -> pa.Table:
        """The latest row per (product_id, content_hash)."""
        wanted = list(dict.fromkeys([*KEY, EXTRACTED_AT, *(columns or FACTS_SCHEMA.names)]))
        return _latest(self._read_parts(wanted)).select(columns or FACTS_SCHEMA.names)

    def write(self, table: pa.Table) -> Optional[Location]:
        """One new part holding ``table`` (rows of ``FACTS_SCHEMA``); None if empty."""
        if table.num_rows == 0:
            return None
        table = table.select(FACTS_SCHEMA.names).cast(FACTS_SCHEMA)
        target = self.location.join(part_name(table))
        write_parquet(target, table)
        logger.info("Facts: %d row(s) written to %s", table.num_rows, target.uri)
        return target

    def compact(self) -> Optional[Location]:
        """Fold every part into one (latest row per key), then delete the
        others. The new part is written first: a crash in between leaves
        duplicates, which readers resolve."""
        parts = self._parts()
        if len(parts) < 2:
            return None
        target = self.write(self.read())
        for path in parts:
            if target is not None and path != target.path:
                self._delete(path)
        return target

    def _delete(self, path: str) -> None:
        if self.location.is_s3:
            # pyarrow's delete_file leaves a "folder/" marker object behind; boto3 does not.
            bucket, _, key = path.partition("/")
            s3_client(self.location).delete_object(Bucket=bucket, Key=key)
        else:
            retry_io(self.location.fs.delete_file, path)


def _latest(table: pa.Table) -> pa.Table:
    """The newest row per key; among rows of the same time, the later one
    (parts are read in name order, rows in file order)."""
    if table.num_rows == 0:
        return table
    times = pc.fill_null(table[EXTRACTED_AT].cast(pa.int64()), 0).to_pylist()
    pids, hashes = table[C.PRODUCT_ID].to_pylist(), table[CONTENT_HASH].to_pylist()
    seen: set[tuple[str, str]] = set()
    keep = []
    for i in sorted(range(table.num_rows), key=lambda i: (times[i], i), reverse=True):
        if (pids[i], hashes[i]) not in seen:
            seen.add((pids[i], hashes[i]))
            keep.append(i)
    return table.take(pa.array(sorted(keep), pa.int64()))


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
