"""The exactly-once check adds up row-id fingerprints from the copy files' footers."""

import hashlib
import re

import pyarrow as pa
import pytest

from factory import columns as C
from factory.fingerprint import Fingerprint
from factory.footer import FINGERPRINT, stamp
from factory.pipeline.finish import IncompleteRun
from factory.pipeline.finish import check_exactly_once as _check_exactly_once
from factory.publish import Attempt
from factory.storage import read_parquet, resolve, write_parquet


def _ids(n: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest()[:20] for i in range(start, start + n)]


def test_a_fingerprint_ignores_order_and_files_but_not_a_swapped_row():
    ids = _ids(500)
    whole = Fingerprint.of(ids)
    assert Fingerprint.of(ids[::-1]) == whole == Fingerprint.of(ids[:123]) + Fingerprint.of(ids[123:])
    assert Fingerprint.parse(whole.text()) == whole and whole.rows == 500
    duplicated_one = ids[:-1] + ids[:1]  # same count: one row missing, another twice
    assert Fingerprint.of(duplicated_one) != whole
    assert Fingerprint.of(ids[:-1] + _ids(1, start=10_000)) != whole  # a foreign row in place of an owed one


def _copies(tmp_path, files: list[list[str]], footer: bool = True) -> Attempt:
    attempt = Attempt(resolve(str(tmp_path / "run")), 1)
    for i, ids in enumerate(files):
        table = pa.table({C.ROW_ID: pa.array(ids, pa.string()), C.TEXT: pa.array(["x"] * len(ids))})
        write_parquet(attempt.copies.join(f"part-{i}.parquet"), stamp(table, {}) if footer else table)
    return attempt


def test_every_owed_row_once_passes_from_footers_alone(tmp_path, monkeypatch):
    ids = _ids(90)
    attempt = _copies(tmp_path, [ids[:40], ids[40:]])
    assert read_parquet(attempt.copies.join("part-0.parquet")).schema.metadata[FINGERPRINT].startswith(b"40:")
    import factory.footer as footer

    monkeypatch.setattr(footer, "read_parquet", lambda *a, **k: pytest.fail("no row id is read"))
    files = _check_exactly_once(attempt, Fingerprint.of(ids))
    assert [f.rows for f in files] == [40, 50] and all(f.size > 0 for f in files)


@pytest.mark.parametrize(
    "written, says",
    [
        (lambda ids: [ids[:40], ids[39:]], "91 row(s) written, 90 expected"),
        (lambda ids: [ids[:40], ids[41:]], "89 row(s) written, 90 expected"),
        (lambda ids: [ids[:40], ids[41:] + ids[:1]], "90 row(s) written, 90 expected, but not the owed ones"),
    ],
)
def test_a_missing_or_twice_written_row_stops_the_publish(tmp_path, written, says):
    ids = _ids(90)
    with pytest.raises(IncompleteRun, match=re.escape(says)):
        _check_exactly_once(_copies(tmp_path, written(ids)), Fingerprint.of(ids))


def test_files_written_before_fingerprints_are_read_instead(tmp_path):
    ids = _ids(30)
    attempt = _copies(tmp_path, [ids[:10], ids[10:]], footer=False)
    assert [f.rows for f in _check_exactly_once(attempt, Fingerprint.of(ids))] == [10, 20]
    with pytest.raises(IncompleteRun):
        _check_exactly_once(attempt, Fingerprint.of(ids[1:]))
