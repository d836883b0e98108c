"""What a written file says about itself, in its Parquet footer.

The driver decides by files, not rows: each file's footer (a ranged read of a
few KB) tells it what the file holds, so the exactly-once check, the summary
and the manifest never read the rows again, and a resumed process adds up
what earlier ones wrote the same way. The writer (``stages/write.py``) stamps:

    FINGERPRINT    any file with a row_id column: the ids' fingerprint
                   (``factory/fingerprint.py``)
    COPY_STATS     a copies file: its verdict counts and engine work
                   (``QualityTally`` and ``WorkTally`` states, as JSON)
    REASON_COUNTS  a dead-letters file: its rows by reason

A file without an entry (written before the entry existed) is read instead,
by the same function the writer uses, so an attempt begun by an older
release still resumes and publishes.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.dedup import WORK_COLUMNS, WorkTally
from factory.fingerprint import Fingerprint
from factory.quality.summary import JUDGE_COLUMNS, VERDICT_COLUMNS, QualityTally
from factory.storage import Location, list_files, read_metadata, read_parquet

FINGERPRINT = b"copy_factory.row_id_fingerprint"
COPY_STATS = b"copy_factory.copy_stats"
REASON_COUNTS = b"copy_factory.reason_counts"

# Footers read at once: each is a small ranged GET, so on S3 the listing's
# latency, not the bytes, is what a serial loop would wait for.
READ_THREADS = 16


@dataclass
class CopyStats:
    """A copies file's verdicts and engine work; files' stats add up."""

    quality: QualityTally = field(default_factory=QualityTally)
    work: WorkTally = field(default_factory=WorkTally)

    @classmethod
    def of(cls, written: pa.Table, carried: Optional[pa.Table] = None) -> CopyStats:
        """The stats of ``written`` (output rows); ``carried`` is the same rows
        before the writer shaped them (they may carry what a reuse saved)."""
        stats = cls()
        stats.quality.add(
            written.select(list(VERDICT_COLUMNS) + [c for c in JUDGE_COLUMNS if c in written.column_names])
        )
        stats.work.add(written.select(list(WORK_COLUMNS)), written if carried is None else carried)
        return stats

    def __iadd__(self, other: CopyStats) -> CopyStats:
        self.quality += other.quality
        self.work += other.work
        return self

    def text(self) -> str:
        return json.dumps({"quality": self.quality.state(), "work": self.work.state()}, separators=(",", ":"))

    @classmethod
    def parse(cls, text: bytes | str) -> CopyStats:
        state = json.loads(text)
        return cls(QualityTally.from_state(state["quality"]), WorkTally.from_state(state["work"]))


def reason_counts_of(rows: pa.Table) -> Counter:
    if not rows.num_rows:
        return Counter()
    counts = pc.value_counts(rows[C.REASON])
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def copies_entries(carried: pa.Table, written: pa.Table) -> dict[bytes, bytes]:
    """A copies sink's footer (``Sink.footer``)."""
    return {COPY_STATS: CopyStats.of(written, carried).text().encode()}


def dead_letter_entries(carried: pa.Table, written: pa.Table) -> dict[bytes, bytes]:
    """A dead-letters sink's footer (``Sink.footer``)."""
    return {REASON_COUNTS: json.dumps(reason_counts_of(written)).encode()}


def stamp(table: pa.Table, entries: dict[bytes, bytes]) -> pa.Table:
    """``table`` with ``entries`` in its schema metadata (its footer, once
    written), and the fingerprint of its row ids when it has them."""
    metadata = dict(table.schema.metadata or {})
    if C.ROW_ID in table.column_names:
        metadata[FINGERPRINT] = Fingerprint.of(table[C.ROW_ID]).text().encode()
    metadata.update(entries)
    return table.replace_schema_metadata(metadata)


@dataclass(frozen=True)
class Footer:
    """One written file as its footer describes it."""

    loc: Location
    file: str  # the name under its folder
    rows: int
    size: int  # bytes
    entries: dict

    def listing(self) -> dict:
        """What a summary or manifest lists of the file."""
        return {"file": self.file, "rows": self.rows, "bytes": self.size}


def read_footers(folder: Location) -> list[Footer]:
    """The footer of every Parquet file under ``folder``, in listing order."""
    infos = list_files(folder, ".parquet")

    def one(info) -> Footer:
        loc = folder.join(info.base_name)
        metadata = read_metadata(loc)
        return Footer(loc, info.base_name, metadata.num_rows, info.size, dict(metadata.metadata or {}))

    if len(infos) <= 1:
        return [one(i) for i in infos]
    with ThreadPoolExecutor(min(READ_THREADS, len(infos))) as pool:
        return list(pool.map(one, infos))


def fingerprint(footer: Footer) -> Fingerprint:
    found = Fingerprint.parse(footer.entries.get(FINGERPRINT))
    return (
        found if found is not None else Fingerprint.of(read_parquet(footer.loc, columns=[C.ROW_ID])[C.ROW_ID])
    )


def file_stats(f: Footer) -> CopyStats:
    """One copies file's stats."""
    text = f.entries.get(COPY_STATS)
    return (
        CopyStats.parse(text)
        if text
        else CopyStats.of(read_parquet(f.loc, columns=list(dict.fromkeys(VERDICT_COLUMNS + WORK_COLUMNS))))
    )


def copy_stats(footers: list[Footer]) -> CopyStats:
    total = CopyStats()
    for f in footers:
        total += file_stats(f)
    return total


def reason_counts(footers: list[Footer]) -> Counter:
    total: Counter = Counter()
    for f in footers:
        text = f.entries.get(REASON_COUNTS)
        total.update(json.loads(text) if text else reason_counts_of(read_parquet(f.loc, columns=[C.REASON])))
    return total
