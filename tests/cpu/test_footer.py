"""What each written file says of itself in its footer is what reading it would say."""

import hashlib
import random

import pyarrow as pa
import pytest

from factory import columns as C
from factory import footer
from factory.footer import CopyStats, read_footers
from factory.stages.write import Sink, WriteParquetFiles
from factory.storage import resolve, write_parquet
from tests.cpu.test_quality_summary import _verdicts


def _copies(n: int, seed: int) -> pa.Table:
    """Rows as the writer gets them: verdicts, engine work, and on reused
    rows the leader's tokens they carry (ReuseCopy)."""
    rng = random.Random(seed)
    verdicts = _verdicts(n, seed)
    reused = [rng.random() < 0.3 for _ in range(n)]
    ids = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:20] for i in range(n)]
    work = pa.table(
        {
            C.ROW_ID: pa.array(ids, pa.string()),
            C.DEDUP_OF: pa.array([ids[0] if r else None for r in reused], pa.string()),
            C.NUM_INPUT_TOKENS: pa.array([0 if r else rng.randint(40, 90) for r in reused], pa.int32()),
            C.NUM_OUTPUT_TOKENS: pa.array([0 if r else rng.randint(5, 30) for r in reused], pa.int32()),
            C.NUM_CACHED_TOKENS: pa.array(
                [None if r or rng.random() < 0.2 else rng.randint(0, 40) for r in reused], pa.int32()
            ),
            C.SAVED_PROMPT_TOKENS: pa.array([rng.randint(40, 90) if r else None for r in reused], pa.int32()),
            C.SAVED_OUTPUT_TOKENS: pa.array([rng.randint(5, 30) if r else None for r in reused], pa.int32()),
        }
    )
    for name in verdicts.column_names:
        work = work.append_column(name, verdicts[name])
    return work


def _drop_carried(rows: pa.Table) -> pa.Table:  # what the copies' shape does to internal columns
    return rows.drop_columns([C.SAVED_PROMPT_TOKENS, C.SAVED_OUTPUT_TOKENS])


def _figures(stats: CopyStats) -> tuple[dict, dict]:
    return stats.quality.summary(), stats.work.figures()


def test_the_copies_footers_add_up_to_the_stats_of_every_row(tmp_path, monkeypatch):
    folder = resolve(str(tmp_path / "copies"))
    write = WriteParquetFiles({"copies": Sink(folder, _drop_carried, footer.copies_entries)})
    parts = [_copies(n, seed) for seed, n in enumerate((90, 1, 40, 200))]
    for part in parts:
        write(part)
    whole = pa.concat_tables(parts)
    want = _figures(CopyStats.of(whole))
    assert want[1]["rows_reused"] > 0 and want[1]["tokens_saved_by_reuse"]["prompt"] > 0
    assert want[1]["tokens_saved_by_reuse"]["prompt"] == sum(
        whole[C.SAVED_PROMPT_TOKENS].drop_null().to_pylist()
    )

    files = read_footers(folder)
    assert sorted(f.rows for f in files) == [1, 40, 90, 200] and all(f.size > 0 for f in files)
    monkeypatch.setattr(footer, "read_parquet", lambda *a, **k: pytest.fail("a row was read"))
    assert _figures(footer.copy_stats(files)) == want
    assert sum((footer.fingerprint(f) for f in files), footer.Fingerprint()) == footer.Fingerprint.of(
        whole[C.ROW_ID]
    )


def test_files_without_footer_entries_are_read_instead(tmp_path):
    """Written by a release before the entries existed: the same figures,
    except what reuse saved, which only the writer saw."""
    folder = resolve(str(tmp_path / "copies"))
    parts = [_drop_carried(_copies(n, seed)) for seed, n in enumerate((30, 70))]
    for i, part in enumerate(parts):
        write_parquet(folder.join(f"part-{i}.parquet"), part)
    quality, work = _figures(footer.copy_stats(read_footers(folder)))
    want_quality, want_work = _figures(CopyStats.of(pa.concat_tables(parts)))
    assert quality == want_quality and work == want_work and work["tokens_saved_by_reuse"]["prompt"] == 0
    assert footer.fingerprint(read_footers(folder)[0]) == footer.Fingerprint.of(parts[0][C.ROW_ID])


def test_dead_letter_reasons_come_from_footers_or_from_old_files(tmp_path, monkeypatch):
    folder = resolve(str(tmp_path / "dead"))
    reasons = ["unknown_user_id"] * 3 + ["duplicate_pair"] * 2 + ["unknown_product_id"]
    table = pa.table({C.USER_ID: pa.array([f"U{i}" for i in range(6)]), C.REASON: pa.array(reasons)})
    WriteParquetFiles({"dead": Sink(folder, None, footer.dead_letter_entries)})(table.slice(0, 4))
    write_parquet(folder.join("part-old.parquet"), table.slice(4))  # no entry: read
    got = footer.reason_counts(read_footers(folder))
    assert got == {"unknown_user_id": 3, "duplicate_pair": 2, "unknown_product_id": 1}
