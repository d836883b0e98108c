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

In the run (``--candidates K``, wired in factory/pipeline/passes.py):

- Draws. The K draws of a (pair, channel) are dealt to its M owed variant
  rows, draw d to variant d mod M (so K >= M; each owed row draws at least
  once). An owed row's draws are copies of its rendered row, side by side,
  with the identical prompt, so vLLM's prefix cache can serve the prompt to
  the later draws (measured: only partly, as draws in one engine step each
  compute its uncached part; benchmarks/RESULTS.md section 13). The CPU engine takes no
  per-request seed; the draws differ because sampling (temperature > 0)
  advances one engine-level generator. The draws share the owed row's
  ``row_id``: staging's dedup keys owed rows, before any draw exists, so it
  never merges draws, and the draw number tells them apart.
- The candidates pass renders, generates and gates every draw and writes
  them all under ``_work/candidates/`` (a row id that is there is drawn, so
  a resumed process draws the rest only).
- The first-drafts pass then reads them back, gathers each owed row's draws
  (a hash shuffle on ``row_id``, as Ray Data's ``map_groups`` does: the
  engine stage does not keep a row's draws in one block) and keeps the best
  one per owed row, under the row's own id and variant: every owed row is
  written once, so the exactly-once check holds as with K = 1. A kept draw
  the gate rejected (all of its row's draws were) goes to the repair queue
  as a rejected first draft does: one more draw, told the best draw's
  reasons. No shuffle runs beside the engine: on a small node its tasks
  (a whole CPU each) would wait for the engine's pass to end anyway.
- Each owed row keeps the best of its own draws, not the best M of the
  (pair, channel)'s K: a kept draw never moves to another variant's row id,
  so a resumed process chooses a row's draws exactly as the first would.
  A process killed between two of the candidates pass's files may leave a
  row with fewer than its draws written; it is chosen among those.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.ray_session import deref

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
    keys = pa.table(
        {
            **{f"__g{i}": table[c] for i, c in enumerate(group_by)},
            "__status": status,
            "__fidelity": -_column(table, C.NUMERIC_FIDELITY, 1.0),
            "__coverage": -_column(table, ATTRIBUTE_COVERAGE, 0.0),
            "__fit": -(
                length_fit(table[C.COPY_LENGTH], table[C.COPY_LENGTH_LIMIT])
                if C.COPY_LENGTH in table.column_names and C.COPY_LENGTH_LIMIT in table.column_names
                else np.zeros(table.num_rows)
            ),
            "__candidate": table[CANDIDATE],
            "__pos": np.arange(table.num_rows),
        }
    )
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


# --------------------------------------------------------------------------- in the run


def draw_numbers(variants: pa.Array | np.ndarray, candidates: int, copies: int) -> np.ndarray:
    """How many draws each owed row of these variants makes: (pair, channel)'s
    ``candidates`` draws dealt to its ``copies`` variants, draw d to variant d mod copies."""
    v = np.asarray(variants, dtype=np.int64)
    return np.maximum(0, (candidates - v + copies - 1) // copies)


def draw_candidates(batch: pa.Table, candidates: int, copies: int) -> pa.Table:
    """Each owed row repeated once per draw, side by side (one prompt, one
    prefix), with its draw number in ``candidate``."""
    variant = batch[C.VARIANT].to_numpy(zero_copy_only=False).astype(np.int64)
    counts = draw_numbers(variant, candidates, copies)
    take = np.repeat(np.arange(batch.num_rows), counts)
    within = np.arange(take.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return batch.take(pa.array(take)).append_column(
        CANDIDATE, pa.array(variant[take] + copies * within, pa.int32())
    )


def gather(ds, partitions: int):
    """Every draw of an owed row in one block: the shuffle Ray Data's
    ``groupby(...).map_groups`` makes (a hash repartition on the key, blocks
    sorted), so ``choose`` can rank whole blocks at once rather than be
    called once per row."""
    return ds.repartition(partitions, keys=[C.ROW_ID], sort=True)


class ChooseCandidates:
    """Whole blocks of gathered draws in (``gather``), the best draw of each
    owed row out, without ``candidate``. Attribute coverage is measured here
    (the ranking's third key), against the products' facts. With a progress
    counter the kept rows count as finished, as the gate counts them."""

    def __init__(self, products, counter: Any = None):

        products = deref(products)
        self._products = products.select(
            [c for c in (C.PRODUCT_ID, "attributes", "selling_points") if c in products.column_names]
        )
        self._counter = counter

    def __call__(self, block: pa.Table) -> pa.Table:
        from factory.progress import count_finished
        from factory.quality.metrics import attribute_coverage_rows

        coverage = attribute_coverage_rows(block.select([C.TEXT, C.PRODUCT_ID]), self._products)
        block = block.append_column(ATTRIBUTE_COVERAGE, pa.array(coverage, mask=np.isnan(coverage)))
        kept = rank_candidates(block, 1, [C.ROW_ID]).drop_columns(
            [ATTRIBUTE_COVERAGE, CANDIDATE_RANK, CANDIDATE]
        )
        if self._counter is not None:  # rows only: the draws' tokens were counted as they were drawn
            count_finished(kept.drop_columns([C.NUM_OUTPUT_TOKENS]), self._counter)
        return kept


def count_draw_tokens(batch: pa.Table, counter: Any) -> pa.Table:
    """The draws' output tokens for the progress line (their rows count once chosen)."""
    if counter is not None and batch.num_rows:
        counter.add.remote(0, int(pc.sum(batch[C.NUM_OUTPUT_TOKENS]).as_py() or 0))
    return batch


# What a candidates file's footer says: draws, the owed rows they were drawn
# for (each owed row's first draw is its variant: draw d < M), and the engine
# work of every draw (the published rows carry only the kept draw's), so the
# summary shows what the extra draws cost: output tokens, and prompt tokens
# the prefix cache did not serve.
CANDIDATE_COUNTS = b"copy_factory.candidate_counts"
_SUMS = {
    "prompt_tokens": C.NUM_INPUT_TOKENS,
    "cached_prompt_tokens": C.NUM_CACHED_TOKENS,
    "output_tokens": C.NUM_OUTPUT_TOKENS,
}


class CandidateFooter:
    """A candidates sink's footer (``factory.stages.write.Sink.footer``)."""

    def __init__(self, copies: int):
        self._copies = copies

    def __call__(self, carried: pa.Table, written: pa.Table) -> dict[bytes, bytes]:
        first = pc.sum(pc.less(written[CANDIDATE], self._copies).cast(pa.int64())).as_py() or 0
        entry = {"drawn": written.num_rows, "kept": first}
        for name, column in _SUMS.items():
            entry[name] = (pc.sum(written[column]).as_py() or 0) if column in written.column_names else 0
        # The engine may not say what its cache served (null): count the draws it did say it for.
        cached = written[C.NUM_CACHED_TOKENS] if C.NUM_CACHED_TOKENS in written.column_names else pa.array([])
        entry["cache_measured_draws"] = len(cached) - cached.null_count
        return {CANDIDATE_COUNTS: json.dumps(entry).encode()}


def tally(footers) -> dict[str, int]:
    """Draws made, owed rows they were drawn for (each keeps one) and the
    draws' engine work, over the attempt's candidates files
    (``factory.footer.read_footers``)."""
    total: dict[str, int] = {"drawn": 0, "kept": 0, **{name: 0 for name in _SUMS}, "cache_measured_draws": 0}
    for f in footers:
        for name, value in json.loads(f.entries[CANDIDATE_COUNTS]).items():
            total[name] += value
    return total
