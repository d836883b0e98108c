"""Rows whose prompt equals an earlier row's reuse that row's copy (see factory.dedup)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C

# What a reusing row takes as its own rather than from its leader: its
# identity, and its user's profile (staging wrote it on the row) for the gate.
OWN_COLUMNS = (C.ROW_ID, C.USER_ID, C.CAMPAIGN_ID, C.VARIANT, C.DEDUP_OF, *C.USERS_LIST_FIELDS)


def reuse_copy(batch: pa.Table) -> pa.Table:
    """Followers beside their leader's written row in (the follower's own
    identity, ``OWN_COLUMNS``, and every other column from the leader: the
    join in ``factory.pipeline.resume.with_leaders``), gate-ready rows out:
    the leader's final copy, locale, template version, draft and finish
    reason under the follower's identity. No engine work was spent on the
    row, so its token counts are 0 (its leader's ride along, as what was
    saved). The quality gate then judges the row on its own (it knows the
    row's user)."""
    orphans = pc.is_null(batch[C.STATUS])
    if pc.any(orphans).as_py():
        missing = batch.filter(orphans)[C.DEDUP_OF].to_pylist()[:3]
        raise RuntimeError(
            f"{pc.sum(orphans).as_py()} reusing row(s) point at rows that are not written: {missing}"
        )
    n = batch.num_rows
    # The leader's tokens are what reusing spared the engine; the copies'
    # footer adds them up (the written row says 0: it cost nothing).
    out = {name: batch[name] for name in batch.column_names}
    out[C.SAVED_PROMPT_TOKENS] = batch[C.NUM_INPUT_TOKENS]
    out[C.SAVED_OUTPUT_TOKENS] = batch[C.NUM_OUTPUT_TOKENS]
    out[C.NUM_INPUT_TOKENS] = pa.array([0] * n, pa.int32())
    out[C.NUM_OUTPUT_TOKENS] = pa.array([0] * n, pa.int32())
    out[C.NUM_CACHED_TOKENS] = pa.nulls(n, pa.int32())
    return pa.table(out)
