"""Choosing the published variants among candidates: verdict first, then the documented score."""

import pyarrow as pa
import pytest

from factory import columns as C
from factory.candidates import CANDIDATE, CANDIDATE_RANK, rank_candidates


def _table(rows):
    names = ("pair", CANDIDATE, C.STATUS, C.NUMERIC_FIDELITY, "attribute_coverage", C.COPY_LENGTH, C.COPY_LENGTH_LIMIT)
    return pa.Table.from_pylist([dict(zip(names, r)) for r in rows])


def _chosen(table, keep):
    out = rank_candidates(table, keep, ["pair"])
    return [(r["pair"], r[CANDIDATE], r[CANDIDATE_RANK]) for r in out.to_pylist()]


def test_verdict_comes_first_then_fidelity_coverage_and_fit():
    table = _table([
        ("p1", 0, C.REJECTED, 1.0, 1.0, 50, 100),
        ("p1", 1, C.REVIEW, 1.0, 1.0, 50, 100),
        ("p1", 2, C.ACCEPTED, 0.5, 1.0, 50, 100),    # accepted beats any review or rejected
        ("p1", 3, C.ACCEPTED, 1.0, 0.2, 50, 100),    # better fidelity beats better coverage
        ("p2", 0, C.ACCEPTED, None, 0.5, 50, 100),   # no numbers: nothing wrong (fidelity 1)
        ("p2", 1, C.ACCEPTED, 1.0, 0.5, 120, 100),   # over the limit: fit 0.83
        ("p2", 2, C.ACCEPTED, 1.0, 0.5, 200, 100),   # fit 0.5
        ("p2", 3, C.ACCEPTED, 1.0, 0.9, 200, 100),   # coverage beats fit
    ])
    assert _chosen(table, 2) == [("p1", 3, 1), ("p1", 2, 2), ("p2", 3, 1), ("p2", 0, 2)]
    assert [c for p, c, _ in _chosen(table, 4) if p == "p2"] == [3, 0, 1, 2]
    assert [c for p, c, _ in _chosen(table, 4) if p == "p1"] == [3, 2, 1, 0]


def test_ties_keep_draw_order_and_the_choice_is_stable():
    table = _table([("p", i, C.ACCEPTED, 1.0, 0.5, 40, 100) for i in (3, 1, 2, 0)])
    assert _chosen(table, 3) == [("p", 0, 1), ("p", 1, 2), ("p", 2, 3)]
    assert _chosen(table.take([3, 2, 1, 0]), 3) == _chosen(table, 3)


def test_edges():
    empty = pa.schema([("pair", pa.string()), (CANDIDATE, pa.int64()), (C.STATUS, pa.string()),
                                       (C.NUMERIC_FIDELITY, pa.float64()), ("attribute_coverage", pa.float64()),
                                       (C.COPY_LENGTH, pa.int32()), (C.COPY_LENGTH_LIMIT, pa.int32())]).empty_table()
    assert rank_candidates(empty, 1, ["pair"]).num_rows == 0
    with pytest.raises(ValueError):
        rank_candidates(empty, 0, ["pair"])
