"""Write rows as Parquet files with deterministic, content-derived names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from factory import columns as C
from factory.storage import make_dirs

WRITTEN_SCHEMA = pa.schema([("sink", pa.string()), ("file", pa.string()), ("rows", pa.int64()),
                            ("bytes", pa.int64())])
_KEY_COLUMNS = (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT)


@dataclass(frozen=True)
class Sink:
    """A folder rows are written to, and the shape they take there."""

    fs: pafs.FileSystem
    folder: str
    shape: Optional[Callable[[pa.Table], pa.Table]] = None


class WriteParquetFiles:
    """One Parquet file per batch and sink, named ``part-<digest>.parquet``.

    The digest covers the keys of the rows in the file, so the same rows give
    the same name on every attempt (a retried task overwrites its own file
    instead of adding a twin), and the stage returns one small row per file
    (sink, name, rows, bytes) for the driver to list in the run summary. Ray
    Data's own writer insists on a random write id in every name, which
    defeats both.

    With several sinks, ``route_column`` names each row's sink (the gate
    sends rejected rows to the repair queue, the rest to the copies).
    """

    def __init__(self, sinks: Mapping[str, Sink], route_column: Optional[str] = None):
        if route_column is None and len(sinks) != 1:
            raise ValueError("several sinks need a route column")
        self._sinks = dict(sinks)
        self._route = route_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        written = []
        for name, sink in self._sinks.items():
            rows = batch if self._route is None else batch.filter(pc.equal(batch[self._route], name))
            if rows.num_rows:
                written.append(self._write(name, sink, rows))
        return pa.Table.from_pylist(written, schema=WRITTEN_SCHEMA)

    @staticmethod
    def _write(name: str, sink: Sink, rows: pa.Table) -> dict:
        digest = hashlib.sha256()
        keys = [rows[c].to_pylist() for c in _KEY_COLUMNS if c in rows.column_names]
        for row in zip(*keys):
            digest.update(repr(row).encode())
        table = sink.shape(rows) if sink.shape else rows
        folder = sink.folder.rstrip("/")
        path = f"{folder}/part-{digest.hexdigest()[:20]}.parquet"
        make_dirs(sink.fs, folder)
        pq.write_table(table, path, filesystem=sink.fs, compression="zstd")
        size = sink.fs.get_file_info(path).size
        return {"sink": name, "file": path.rsplit("/", 1)[-1], "rows": table.num_rows, "bytes": size}
