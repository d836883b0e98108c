"""Rows whose prompt equals an earlier row's reuse that row's copy (see factory.dedup)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C

# What a reusing row takes as its own rather than from its leader.
OWN_COLUMNS = (C.ROW_ID, C.USER_ID, C.CAMPAIGN_ID, C.VARIANT, C.DEDUP_OF)


class ReuseCopy:
    """Followers in (their keys and ``dedup_of``), gate-ready rows out: the
    leader's final copy, locale, template version, attempt and finish reason
    under the follower's own identity. No engine work was spent on the row,
    so its token counts are 0 (its leader's ride along, as what was saved).
    The quality gate then judges the row on its own (it knows the row's user)."""

    def __init__(self, leaders):
        import ray

        self._leaders = ray.get(leaders) if isinstance(leaders, ray.ObjectRef) else leaders

    def __call__(self, batch: pa.Table) -> pa.Table:
        idx = pc.index_in(batch[C.DEDUP_OF], value_set=self._leaders[C.ROW_ID])
        if idx.null_count:
            missing = batch.filter(pc.is_null(idx))[C.DEDUP_OF].to_pylist()[:3]
            raise RuntimeError(f"{idx.null_count} reusing row(s) point at rows that are not written: {missing}")
        lead = self._leaders.take(idx)
        n = batch.num_rows
        columns = {name: lead[name] for name in lead.column_names if name not in OWN_COLUMNS}
        columns.update({name: batch[name] for name in OWN_COLUMNS})
        # The leader's tokens are what reusing spared the engine; the copies'
        # footer adds them up (the written row says 0: it cost nothing).
        columns[C.SAVED_PROMPT_TOKENS] = lead[C.NUM_INPUT_TOKENS]
        columns[C.SAVED_OUTPUT_TOKENS] = lead[C.NUM_OUTPUT_TOKENS]
        columns[C.NUM_INPUT_TOKENS] = pa.array([0] * n, pa.int32())
        columns[C.NUM_OUTPUT_TOKENS] = pa.array([0] * n, pa.int32())
        columns[C.NUM_CACHED_TOKENS] = pa.nulls(n, pa.int32())
        return pa.table(columns)
