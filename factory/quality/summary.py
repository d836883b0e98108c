"""Counts of the gate's verdicts for the run summary, before and after repair.

Everything is derived from the published rows: a repaired row (attempt 2)
was rejected on attempt 1 for ``first_attempt_reasons``; every other row's
attempt-1 verdict is its final one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from factory import columns as C

VERDICT_COLUMNS = (C.CHANNEL, C.STATUS, C.REASONS, C.ATTEMPT, C.FIRST_ATTEMPT_REASONS)


def _shares(counts: dict[str, int], total: int) -> dict[str, float]:
    return {k: round(v / total, 4) for k, v in counts.items()} if total else {}


def quality_summary(verdicts: pa.Table) -> dict[str, Any]:
    rows = verdicts.num_rows
    channels = verdicts[C.CHANNEL].to_pylist()
    statuses = verdicts[C.STATUS].to_pylist()
    reasons = verdicts[C.REASONS].to_pylist()
    attempts = verdicts[C.ATTEMPT].to_pylist()
    first_reasons = verdicts[C.FIRST_ATTEMPT_REASONS].to_pylist()

    status = Counter({s: 0 for s in C.STATUSES})
    by_channel: dict[str, Counter] = {}
    by_reason: Counter = Counter()
    reasons_by_channel: dict[str, Counter] = {}
    before_status = Counter({s: 0 for s in C.STATUSES})
    before_reason: Counter = Counter()
    repaired = Counter({s: 0 for s in C.STATUSES})
    for channel, st, why, attempt, first in zip(channels, statuses, reasons, attempts, first_reasons):
        status[st] += 1
        by_channel.setdefault(channel, Counter({s: 0 for s in C.STATUSES}))[st] += 1
        by_reason.update(why or [])
        reasons_by_channel.setdefault(channel, Counter()).update(why or [])
        if attempt == 2:
            before_status[C.REJECTED] += 1
            before_reason.update(first or [])
            repaired[st] += 1
        else:
            before_status[st] += 1
            before_reason.update(why or [])
    attempted = sum(repaired.values())
    return {
        "rows": rows,
        "status": dict(status),
        "status_share": _shares(dict(status), rows),
        "status_by_channel": {ch: dict(c) for ch, c in sorted(by_channel.items())},
        "reasons": dict(by_reason.most_common()),
        "reasons_by_channel": {ch: dict(c.most_common()) for ch, c in sorted(reasons_by_channel.items())},
        "before_repair": {
            "status": dict(before_status),
            "status_share": _shares(dict(before_status), rows),
            "reasons": dict(before_reason.most_common()),
        },
        "repair": {
            "attempted": attempted,
            "outcome": dict(repaired),
            "fixed_share": round((repaired[C.ACCEPTED] + repaired[C.REVIEW]) / attempted, 4) if attempted else None,
        },
    }
