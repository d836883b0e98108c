"""What an earlier process of this attempt already wrote is not generated again.

A process that began its attempt has written nothing a pass could find, so
it counts each pass's rows from file footers. A resumed process finds the
rows still owed with a Ray Data anti join on ``row_id`` against what is
written, and writes them under ``_work/remaining/``: no id set is held on
the driver or sent to every actor, whatever the run's size. Reuse takes its
leaders' copies with a join as well (``with_leaders``).
"""

from __future__ import annotations

from dataclasses import dataclass

from factory import columns as C
from factory.footer import read_footers
from factory.pipeline.plan import join_partitions
from factory.pipeline.staging import read, write
from factory.publish import Attempt
from factory.stages.finalize import PROVENANCE_COLUMNS
from factory.stages.reuse import OWN_COLUMNS
from factory.stages.write import Sink
from factory.storage import Location, delete_dir_if_exists, list_files


@dataclass
class Written:
    """What the attempt held when this process started (from footers)."""

    copies: int  # rows in the copies
    queued: int  # rows in the repair queue

    @property
    def rows(self) -> int:
        return self.copies + self.queued


def already_written(attempt: Attempt) -> Written:
    return Written(
        copies=sum(f.rows for f in read_footers(attempt.copies)),
        queued=sum(f.rows for f in read_footers(attempt.repair_queue)),
    )


@dataclass
class Remaining:
    """A pass's rows still owed: the folder and files that hold them, and how many."""

    folder: Location
    files: list[str]
    rows: int


def remaining(
    attempt: Attempt, source: Location, written: list[Location], resumed: bool, num_cpus: float, name: str
) -> Remaining:
    """The rows of ``source`` whose ``row_id`` is not in ``written``. A
    process that began the attempt has written none of them: ``source`` as
    it is. A resumed one anti-joins on Ray Data into ``_work/remaining/<name>``."""
    footers = read_footers(source)
    mine = Remaining(source, [f.loc.path for f in footers], sum(f.rows for f in footers))
    if not resumed or not mine.rows:
        return mine
    written_files = [i.path for loc in written for i in list_files(loc, ".parquet")]
    if not written_files:
        return mine
    into = attempt.work.join("remaining", name)
    delete_dir_if_exists(into)  # an earlier resumed process's: stale now
    ids = read(written_files, attempt.base, num_cpus, columns=[C.ROW_ID])
    still = read(mine.files, source, num_cpus).join(
        ids,
        join_type="left_anti",
        on=(C.ROW_ID,),
        num_partitions=join_partitions(mine.rows),
        aggregator_ray_remote_args={"num_cpus": num_cpus},
    )
    files = write(still, {name: Sink(into)}, num_cpus)
    return Remaining(into, [into.join(f["file"]).path for f in files], sum(f["rows"] for f in files))


def with_leaders(followers, copies: Location, num_cpus: float, rows: int):
    """Each follower beside its leader's written row (a left join of
    ``dedup_of`` on the copies' ``row_id``): the leader's columns except the
    follower's own identity (``factory.stages.reuse.OWN_COLUMNS``)."""
    leaders = read([i.path for i in list_files(copies, ".parquet")], copies, num_cpus)
    # The leader's copy, not its provenance: the follower's own is stamped when
    # it is written (and a "model" column would name a LoRA adapter to Ray
    # LLM's engine stage, which the judge's pass runs these rows through).
    leaders = leaders.drop_columns(
        [c for c in OWN_COLUMNS if c != C.ROW_ID and c in C.OUTPUT_COLUMNS] + list(PROVENANCE_COLUMNS)
    )
    return followers.select_columns(list(OWN_COLUMNS)).join(
        leaders,
        join_type="left_outer",
        on=(C.DEDUP_OF,),
        right_on=(C.ROW_ID,),
        num_partitions=join_partitions(rows),
        aggregator_ray_remote_args={"num_cpus": num_cpus},
    )
