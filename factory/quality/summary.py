"""Counts of the gate's verdicts for the run summary, before and after repair.

Everything is derived from the published rows: a repaired row (draft 2)
was rejected as draft 1 for ``first_draft_reasons``; every other row's
attempt-1 verdict is its final one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C

VERDICT_COLUMNS = (C.CHANNEL, C.STATUS, C.REASONS, C.DRAFT, C.FIRST_DRAFT_REASONS)
# Counted when present (files written before the judge existed lack them).
JUDGE_COLUMNS = (C.JUDGE_VERDICT, C.JUDGE_TOKENS)


def _shares(counts: dict[str, int], total: int) -> dict[str, float]:
    return {k: round(v / total, 4) for k, v in counts.items()} if total else {}


class QualityTally:
    """The gate's verdicts added up one table (one output file) at a time,
    columnar: the driver never holds a whole run's verdicts, and a million
    rows cost seconds, not a Python object per value."""

    def __init__(self) -> None:
        self.rows = 0
        self.status = Counter({s: 0 for s in C.STATUSES})
        self.by_channel: dict[str, Counter] = {}
        self.by_reason: Counter = Counter()
        self.reasons_by_channel: dict[str, Counter] = {}
        self.before_status = Counter({s: 0 for s in C.STATUSES})
        self.before_reason: Counter = Counter()
        self.repaired = Counter({s: 0 for s in C.STATUSES})
        self.judged: Counter = Counter()  # judge_verdict -> rows
        self.judge_tokens = 0

    def add(self, verdicts: pa.Table) -> None:
        """Count the rows of ``verdicts`` (``VERDICT_COLUMNS``, and ``JUDGE_COLUMNS`` when there)."""
        self.rows += verdicts.num_rows
        if C.JUDGE_VERDICT in verdicts.column_names:
            for (verdict,), n in _counts(
                verdicts.filter(pc.is_valid(verdicts[C.JUDGE_VERDICT])), [C.JUDGE_VERDICT]
            ):
                self.judged[verdict] += n
        if C.JUDGE_TOKENS in verdicts.column_names:
            self.judge_tokens += pc.sum(verdicts[C.JUDGE_TOKENS]).as_py() or 0
        for (channel, status), n in _counts(verdicts, [C.CHANNEL, C.STATUS]):
            self.status[status] += n
            self.by_channel.setdefault(channel, Counter({s: 0 for s in C.STATUSES}))[status] += n
            self.reasons_by_channel.setdefault(channel, Counter())
        for (reason, channel), n in _list_counts(verdicts, C.REASONS, by=C.CHANNEL):
            self.by_reason[reason] += n
            self.reasons_by_channel[channel][reason] += n
        # A repaired row (draft 2) was rejected as draft 1 for its first
        # reasons; every other row's draft-1 verdict is its final one.
        second = pc.fill_null(pc.equal(verdicts[C.DRAFT], 2), False)
        repaired, kept = verdicts.filter(second), verdicts.filter(pc.invert(second))
        self.before_status[C.REJECTED] += repaired.num_rows
        for (status,), n in _counts(repaired, [C.STATUS]):
            self.repaired[status] += n
        for (reason,), n in _list_counts(repaired, C.FIRST_DRAFT_REASONS):
            self.before_reason[reason] += n
        for (status,), n in _counts(kept, [C.STATUS]):
            self.before_status[status] += n
        for (reason,), n in _list_counts(kept, C.REASONS):
            self.before_reason[reason] += n

    def __iadd__(self, other: QualityTally) -> QualityTally:
        """Add another tally (another file's) to this one."""
        self.rows += other.rows
        self.judge_tokens += other.judge_tokens
        for mine, theirs in (
            (self.status, other.status),
            (self.by_reason, other.by_reason),
            (self.judged, other.judged),
            (self.before_status, other.before_status),
            (self.before_reason, other.before_reason),
            (self.repaired, other.repaired),
        ):
            mine.update(theirs)
        for mine, theirs, zero in (
            (self.by_channel, other.by_channel, {s: 0 for s in C.STATUSES}),
            (self.reasons_by_channel, other.reasons_by_channel, {}),
        ):
            for channel, counts in theirs.items():
                mine.setdefault(channel, Counter(zero)).update(counts)
        return self

    _FIELDS = (
        "status",
        "by_channel",
        "by_reason",
        "reasons_by_channel",
        "before_status",
        "before_reason",
        "repaired",
        "judged",
    )

    def state(self) -> dict[str, Any]:
        """The counts as plain JSON values (a file footer keeps them, ``factory/footer.py``)."""
        out: dict[str, Any] = {"rows": self.rows, "judge_tokens": self.judge_tokens}
        for name in self._FIELDS:
            value = getattr(self, name)
            out[name] = (
                {k: dict(v) for k, v in value.items()}
                if name in ("by_channel", "reasons_by_channel")
                else dict(value)
            )
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> QualityTally:
        tally = cls()
        tally.rows = state["rows"]
        tally.judge_tokens = state.get("judge_tokens", 0)
        for name in cls._FIELDS:
            value = state.get(name, {})  # a footer written before the judge has no "judged"
            if name in ("by_channel", "reasons_by_channel"):
                setattr(tally, name, {k: Counter(v) for k, v in value.items()})
            else:
                getattr(tally, name).update(value)
        return tally

    def rows_by_channel(self) -> dict[str, int]:
        return {ch: sum(c.values()) for ch, c in self.by_channel.items()}

    def summary(self) -> dict[str, Any]:
        rows, repaired = self.rows, self.repaired
        attempted = sum(repaired.values())
        return {
            "rows": rows,
            "status": dict(self.status),
            "status_share": _shares(dict(self.status), rows),
            "status_by_channel": {ch: dict(c) for ch, c in sorted(self.by_channel.items())},
            "reasons": dict(self.by_reason.most_common()),
            "reasons_by_channel": {
                ch: dict(c.most_common()) for ch, c in sorted(self.reasons_by_channel.items())
            },
            "before_repair": {
                "status": dict(self.before_status),
                "status_share": _shares(dict(self.before_status), rows),
                "reasons": dict(self.before_reason.most_common()),
            },
            "repair": {
                "attempted": attempted,
                "outcome": dict(repaired),
                "fixed_share": round((repaired[C.ACCEPTED] + repaired[C.REVIEW]) / attempted, 4)
                if attempted
                else None,
            },
            "judge": self.judge_summary(),
        }

    def judge_summary(self) -> dict[str, Any] | None:
        """The model judge's verdict mix and cost; None when no row was judged."""
        judged = sum(self.judged.values())
        if not judged:
            return None
        return {
            "judged": judged,
            "judged_share": round(judged / self.rows, 4) if self.rows else None,
            "verdicts": dict(self.judged.most_common()),
            "flagged_share": round(self.judged["flagged"] / judged, 4),
            # The findings the judge added are counted with every other reason above.
            "reasons": {
                code: self.by_reason[code]
                for code in ("unsupported_claim", "off_topic")
                if self.by_reason.get(code)
            },
            "tokens": self.judge_tokens,
            "tokens_per_judged_row": round(self.judge_tokens / judged, 1),
        }


def quality_summary(verdicts: pa.Table) -> dict[str, Any]:
    """The summary of one table of verdicts (``QualityTally`` for many)."""
    tally = QualityTally()
    tally.add(verdicts)
    return tally.summary()


def _counts(table: pa.Table, keys: list[str]) -> list[tuple[tuple, int]]:
    """(key values, rows) per distinct key, in order of first appearance."""
    if table.num_rows == 0:
        return []
    grouped = table.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    values = [grouped[k].to_pylist() for k in keys]
    return list(zip(zip(*values), grouped["count_all"].to_pylist()))


def _list_counts(table: pa.Table, column: str, by: str | None = None) -> list[tuple[tuple, int]]:
    """(item[, by value], count) over the items of a list column."""
    if table.num_rows == 0:
        return []
    lists = table[column].combine_chunks()
    items = pa.table({"item": pc.list_flatten(lists)})
    if by is not None:
        items = items.append_column("by", pc.take(table[by], pc.list_parent_indices(lists)))
    return _counts(items, ["item"] + (["by"] if by is not None else []))
