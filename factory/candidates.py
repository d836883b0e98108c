"""Which of K candidate copies of a (pair, channel) to publish: the ranking.

Issue 22, item 1 (drawing the K candidates needs the engine; this is the
choice among them, a pure function). Candidates of one group are ordered by,
in turn:

1. verdict: accepted, then review, then rejected;
2. numeric fidelity, higher first (a wrong number is the costliest mistake a
   copy can make; a copy with no numbers has nothing wrong: null counts as 1);
3. attribute coverage, higher first (the share of the product's facts the
   copy names; null counts as 0);
4. fit to the length limit: 1 within the limit, limit / length over it
   (so a copy 10 % over beats one 50 % over); null counts as 0;
5. the candidate's draw number, lower first, so equal candidates keep a
   stable order and the choice is the same on every rerun.

The best ``keep`` of each group are kept, with their 1-based ``candidate_rank``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C

CANDIDATE = "candidate"  # the draw number within the group, 0-based
CANDIDATE_RANK = "candidate_rank"
ATTRIBUTE_COVERAGE = "attribute_coverage"
STATUS_ORDER = {C.ACCEPTED: 0, C.REVIEW: 1, C.REJECTED: 2}


def length_fit(length: pa.Array, limit: pa.Array) -> np.ndarray:
    """1 within the limit, limit / length over it, 0 when either is unknown."""
    n = np.asarray(pc.fill_null(length.cast(pa.float64()), np.nan), dtype=float)
    m = np.asarray(pc.fill_null(limit.cast(pa.float64()), np.nan), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        fit = np.where(n <= m, 1.0, m / n)
    return np.nan_to_num(fit, nan=0.0)


def _column(table: pa.Table, name: str, default: float) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, default)
    return np.asarray(pc.fill_null(table[name].cast(pa.float64()), default), dtype=float)


def rank_candidates(table: pa.Table, keep: int, group_by: Sequence[str]) -> pa.Table:
    """The best ``keep`` candidates of each ``group_by`` group, ordered as the
    module says, with ``candidate_rank``. Needs ``status`` and ``candidate``."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    if table.num_rows == 0:
        return table.append_column(CANDIDATE_RANK, pa.array([], pa.int32()))
    status = np.array([STATUS_ORDER.get(s, len(STATUS_ORDER)) for s in table[C.STATUS].to_pylist()])
    keys = pa.table({
        **{f"__g{i}": table[c] for i, c in enumerate(group_by)},
        "__status": status,
        "__fidelity": -_column(table, C.NUMERIC_FIDELITY, 1.0),
        "__coverage": -_column(table, ATTRIBUTE_COVERAGE, 0.0),
        "__fit": -(length_fit(table[C.COPY_LENGTH], table[C.COPY_LENGTH_LIMIT])
                   if C.COPY_LENGTH in table.column_names and C.COPY_LENGTH_LIMIT in table.column_names
                   else np.zeros(table.num_rows)),
        "__candidate": table[CANDIDATE],
        "__pos": np.arange(table.num_rows),
    })
    order = keys.sort_by([(c, "ascending") for c in keys.column_names if c != "__pos"])
    groups = [order[f"__g{i}"].to_numpy(zero_copy_only=False) for i in range(len(group_by))]
    starts = np.ones(order.num_rows, dtype=bool)
    for g in groups:
        starts[1:] &= g[1:] == g[:-1]
    new_group = ~starts
    new_group[0] = True
    run_start = np.maximum.accumulate(np.where(new_group, np.arange(order.num_rows), 0))
    rank = np.arange(order.num_rows) - run_start + 1
    chosen = rank <= keep
    positions = order["__pos"].to_numpy()[chosen]
    out = table.take(pa.array(positions))
    return out.append_column(CANDIDATE_RANK, pa.array(rank[chosen], pa.int32()))
