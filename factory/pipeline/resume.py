"""Resume: what an earlier process of this attempt already wrote is not
generated again.

A process that began its attempt has written nothing the passes could
find, so it counts from file footers and reads no row id. Only a resumed
process compares ids: the rows it skips are the ones already in the copies
(or queued for repair)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.footer import read_footers
from factory.publish import Attempt
from factory.storage import Location, list_files, read_parquet


@dataclass
class Written:
    """What the attempt held when this process started."""

    done: pa.ChunkedArray  # row ids in the copies and the repair queue
    copies: int  # rows already in the copies
    to_generate: int  # staged rows not written yet (first drafts owed)


def already_written(attempt: Attempt) -> Written:
    copies = row_ids(attempt.copies)
    done = pa.chunked_array(copies.chunks + row_ids(attempt.repair_queue).chunks, pa.string())
    to_generate = (count_missing(row_ids(attempt.pairs), done) if len(done)
                   else sum(f.rows for f in read_footers(attempt.pairs)))
    return Written(done=done, copies=len(copies), to_generate=to_generate)


def row_ids(folder: Location) -> pa.ChunkedArray:
    """Row ids in the Parquet files under ``folder``: what is already written.
    Kept as Arrow: a Python list of a million ids costs the driver ~100 MB."""
    chunks = []
    for info in list_files(folder, ".parquet"):
        chunks.extend(read_parquet(folder.join(info.base_name), columns=[C.ROW_ID])[C.ROW_ID].chunks)
    return pa.chunked_array(chunks, pa.string())


def written_among(ids: pa.ChunkedArray, folder: Location) -> tuple[int, pa.Array]:
    """How many of ``ids`` the Parquet files under ``folder`` lack, and the
    ones they hold. One file's row ids at a time, so the driver's memory
    follows ``ids`` (a repair queue, the followers), not a whole run's copies."""
    ids = ids.combine_chunks()
    found = np.zeros(len(ids), dtype=bool)
    if len(ids):
        for info in list_files(folder, ".parquet"):
            column = read_parquet(folder.join(info.base_name), columns=[C.ROW_ID])[C.ROW_ID]
            found |= pc.is_in(ids, value_set=column).to_numpy(zero_copy_only=False)
    return int((~found).sum()), pc.unique(ids.filter(pa.array(found)))


def still_owed(folder: Location, copies: Location, resumed: bool) -> tuple[int, pa.Array]:
    """``written_among`` for the rows of the files under ``folder`` (the
    repair queue, the followers). In a process that began the attempt no
    such row can be in the copies yet (the writer sends a row to one sink,
    and followers are written last), so it counts them from footers and
    reads no id; only a resumed process looks."""
    if not resumed:
        return sum(f.rows for f in read_footers(folder)), pa.array([], pa.string())
    return written_among(row_ids(folder), copies)


def count_missing(ids: pa.ChunkedArray, present: pa.ChunkedArray) -> int:
    """How many of ``ids`` are not in ``present``."""
    if not len(ids):
        return 0
    if not len(present):
        return len(ids)
    return len(ids) - pc.sum(pc.is_in(ids, value_set=present.combine_chunks())).as_py()


class SkipRows:
    """Drops rows whose id is in ``ids`` (an object ref: sent once per actor)."""

    def __init__(self, ids):
        import ray

        self._ids = ray.get(ids) if isinstance(ids, ray.ObjectRef) else ids

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.filter(pc.invert(pc.is_in(batch[C.ROW_ID], value_set=self._ids)))


def skip_rows(ds, ids: pa.Array, num_cpus: float):
    """``ds`` without the rows whose id is in ``ids`` (sent once to one actor)."""
    import ray

    if not len(ids):
        return ds
    return ds.map_batches(SkipRows, fn_constructor_kwargs={"ids": ray.put(ids)},
                          batch_format="pyarrow", num_cpus=num_cpus,
                          compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1))


def leader_rows(attempt: Attempt, followers: list) -> pa.Table:
    """The written rows that followers reuse (their final copies)."""
    wanted = pa.concat_tables([read_parquet(attempt.followers.join(f.base_name), columns=[C.DEDUP_OF])
                               for f in followers])[C.DEDUP_OF].unique()
    # Filtered while each file is decoded, batch by batch: the driver never
    # holds a whole copies file, only the leaders.
    keep = pc.field(C.ROW_ID).isin(wanted)
    return pa.concat_tables([read_parquet(attempt.copies.join(info.base_name), filters=keep)
                             for info in list_files(attempt.copies, ".parquet")])
