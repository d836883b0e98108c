"""Write rows as Parquet files with deterministic, content-derived names."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.storage import Location, write_parquet

WRITTEN_SCHEMA = pa.schema(
    [("sink", pa.string()), ("file", pa.string()), ("rows", pa.int64()), ("bytes", pa.int64())]
)
_KEY_COLUMNS = (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT)


@dataclass(frozen=True)
class Sink:
    """A folder rows are written to, and the shape they take there. With no
    folder the rows are only counted (the dead-letter pass counts good rows)."""

    folder: Optional[Location]
    shape: Optional[Callable[[pa.Table], pa.Table]] = None
    # What the file's footer says of it beyond its row ids' fingerprint:
    # footer(rows as given, rows as written) -> entries (factory/footer.py).
    footer: Optional[Callable[[pa.Table, pa.Table], dict[bytes, bytes]]] = None
    # Some of the written rows kept in another folder too (the review queue):
    # its shape picks them from the rows as written. That file is written
    # first, under the same name, so a written file always has its companion
    # (the driver drops companions whose file was never written).
    beside: Optional[Sink] = None


class WriteParquetFiles:
    """One Parquet file per batch and sink, named ``part-<digest>.parquet``.

    The digest covers the keys of the rows in the file, so the same rows give
    the same name on every attempt (a retried task overwrites its own file
    instead of adding a twin), and the stage returns one small row per file
    (sink, name, rows, bytes) for the driver to list in the run summary. Each
    file is written whole (one PUT, or a rename), so after a crash the files
    present are exactly the rows done. Ray Data's own writer insists on a
    random write id in every name, which defeats both.

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
        for name, rows in self._by_route(batch):
            if name not in self._sinks:
                raise ValueError(
                    f"{rows.num_rows} row(s) routed to {name!r}, which is not a sink here "
                    f"({', '.join(self._sinks)})"
                )
            written.append(self._write(name, self._sinks[name], rows))
        return pa.Table.from_pylist(written, schema=WRITTEN_SCHEMA)

    def _by_route(self, batch: pa.Table):
        """(sink name, its rows) for each sink the batch has rows for: one
        sort, not a filter per sink (pass 1 has one sink per product bucket)."""
        if not batch.num_rows:
            return
        if self._route is None:
            yield next(iter(self._sinks)), batch
            return
        batch = batch.take(pc.sort_indices(batch[self._route]))
        routes = batch[self._route].to_numpy(zero_copy_only=False)
        starts = [0, *(np.flatnonzero(routes[1:] != routes[:-1]) + 1).tolist(), len(routes)]
        for start, end in zip(starts, starts[1:]):
            yield routes[start], batch.slice(start, end - start)

    @staticmethod
    def _write(sink_name: str, sink: Sink, rows: pa.Table) -> dict:
        if sink.folder is None:
            return {"sink": sink_name, "file": None, "rows": rows.num_rows, "bytes": 0}
        digest = hashlib.sha256()
        if C.ROW_ID in rows.column_names:
            for row_id in rows[C.ROW_ID].to_pylist():
                digest.update(row_id.encode())
            # Draws of one row share its id (factory/candidates.py): two files
            # of its draws must not share a name.
            if "candidate" in rows.column_names:
                digest.update(repr(rows["candidate"].to_pylist()).encode())
        else:
            keys = [rows[c].to_pylist() for c in _KEY_COLUMNS if c in rows.column_names]
            for row in zip(*keys):
                digest.update(repr(row).encode())
        table = sink.shape(rows) if sink.shape else rows
        # The footer says what the file holds, so the driver need not read it
        # again. Imported here: factory.footer's tallies import the stages.
        from factory import footer

        table = footer.stamp(table, sink.footer(rows, table) if sink.footer else {})
        file_name = f"part-{digest.hexdigest()[:20]}.parquet"
        if sink.beside is not None:
            companion = sink.beside.shape(table)
            if companion.num_rows:
                write_parquet(sink.beside.folder.join(file_name), footer.stamp(companion, {}))
        size = write_parquet(sink.folder.join(file_name), table)
        return {"sink": sink_name, "file": file_name, "rows": table.num_rows, "bytes": size}
