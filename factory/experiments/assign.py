"""Which arm a user is in: deterministic, per user, stable across reruns.

    h = the first 64 bits of sha256(experiment_id, user_id)
    h < holdout * 2^64                -> holdout (no copy)
    else v = where h falls in the rest, in millionths -> the arm whose interval holds v

The holdout depends on the experiment id, the user id and the holdout share,
and on nothing else: not on the night, not on the allocation. Since the
holdout share cannot change within an experiment (``config.check_unchanged``),
a holdout user stays one for the experiment's whole life and never sees copy
of it.

The arms share the rest through a *layout*: sorted intervals of [0, 10^6),
each held by one arm, that together cover it. The first night's layout gives
each arm one interval in declaration order. Each later night's layout is the
previous night's *rebalanced* to the new shares: an arm that shrinks gives up
the top of its intervals, an arm that grows takes the freed pieces, lowest
first; nothing else moves. So the users who change arm from one night to the
next are exactly the share that has to move (the total variation between the
two allocations), and no fewer are possible. Mapping the rest to arms by
cumulative shares, the simpler way, moves more: when arm 1 shrinks and arm 3
grows, every boundary in between slides and users of arm 2, whose share did
not change, move too.

The trade-off, chosen on purpose: with an allocation that follows the
feedback (Thompson sampling), a user *can* change arm between nights (only
within the share that moved); a user never sees two arms in one night, in any
channel or product, because the assignment is per user, not per row. Each
output row carries the arm it was written by, and feedback is joined by row
id, so a moved user's clicks count for the arm they actually saw. Pinning
every user to their first arm forever would stop a bandit from moving any
traffic of a stable user base; use ``allocation: fixed`` where no user may
ever move.

A night's layout is a pure function of the previous published night's layout
and this night's shares, and the shares are a pure function of (experiment,
run date, feedback table) (``bandit.allocate``); both go into the run's
manifest. A rerun of a night therefore assigns every user exactly as before.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import pyarrow as pa

from factory import columns as C
from factory.experiments.config import HOLDOUT

UNITS = 1_000_000  # the non-holdout users in millionths: shares are kept to six decimals
_SPACE = 2**64

EXPERIMENT_ID, ARM = C.EXPERIMENT_ID, C.ARM


def user_hash(experiment_id: str, user_id: str) -> int:
    """64 bits of sha256 over (experiment, user): the same in every process
    and on every night; another experiment id reshuffles everyone."""
    digest = hashlib.sha256(f"{experiment_id}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def holdout_threshold(holdout: float) -> int:
    return int(holdout * _SPACE)


def to_units(shares: Mapping[str, float]) -> dict[str, int]:
    """Shares as whole millionths adding up to exactly UNITS (largest remainders
    get the leftover units; ties go to the earlier arm)."""
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("the shares add up to 0")
    exact = {a: UNITS * s / total for a, s in shares.items()}
    units = {a: int(x) for a, x in exact.items()}
    order = sorted(shares, key=lambda a: (-(exact[a] - units[a]), list(shares).index(a)))
    for a in order[: UNITS - sum(units.values())]:
        units[a] += 1
    return units


@dataclass(frozen=True)
class Layout:
    """Sorted [start, end) intervals of [0, UNITS), each held by one arm, covering it."""

    intervals: tuple[tuple[int, int, str], ...]

    @classmethod
    def contiguous(cls, shares: Mapping[str, float]) -> Layout:
        """One interval per arm, in the order given: the first night."""
        start, out = 0, []
        for arm, n in to_units(shares).items():
            if n:
                out.append((start, start + n, arm))
            start += n
        return cls(tuple(out))

    def units(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for start, end, arm in self.intervals:
            out[arm] = out.get(arm, 0) + end - start
        return out

    def shares(self) -> dict[str, float]:
        return {arm: n / UNITS for arm, n in self.units().items()}

    def rebalance(self, shares: Mapping[str, float]) -> Layout:
        """This layout moved to ``shares`` with the fewest users moved (see the
        module's docstring). Arms not in ``shares`` give up all they hold; new
        arms take their part of the freed pieces."""
        target = to_units(shares)
        excess = {arm: n - target.get(arm, 0) for arm, n in self.units().items()}
        kept, freed = [], []
        for start, end, arm in reversed(self.intervals):  # shrinking arms give up their highest users
            cut = min(max(excess.get(arm, 0), 0), end - start)
            if cut:
                excess[arm] -= cut
                freed.append((end - cut, end))
            if end - cut > start:
                kept.append((start, end - cut, arm))
        freed.sort()
        have = self.units()
        for arm in shares:  # growing arms take freed pieces, lowest first, in the order the arms are declared
            need = target[arm] - have.get(arm, 0)
            while need > 0:
                start, end = freed.pop(0)
                take = min(need, end - start)
                kept.append((start, start + take, arm))
                if start + take < end:
                    freed.insert(0, (start + take, end))
                need -= take
        return Layout(_merged(sorted(kept)))

    def arm_at(self, v: int) -> str:
        i = bisect.bisect_right(self._starts, v) - 1
        return self.intervals[i][2]

    @property
    def _starts(self) -> list[int]:
        return [s for s, _, _ in self.intervals]

    def to_json(self) -> list[list[Any]]:
        return [[s, e, a] for s, e, a in self.intervals]

    @classmethod
    def from_json(cls, value: Sequence[Sequence[Any]]) -> Layout:
        layout = cls(tuple((int(s), int(e), str(a)) for s, e, a in value))
        layout.check()
        return layout

    def check(self) -> None:
        at = 0
        for start, end, _ in self.intervals:
            if start != at or end <= start:
                raise ValueError(f"layout intervals must cover [0, {UNITS}) in order; broken at {start}")
            at = end
        if at != UNITS:
            raise ValueError(f"layout intervals end at {at}, not {UNITS}")


def _merged(intervals: Sequence[tuple[int, int, str]]) -> tuple[tuple[int, int, str], ...]:
    out: list[tuple[int, int, str]] = []
    for start, end, arm in intervals:
        if out and out[-1][2] == arm and out[-1][1] == start:
            out[-1] = (out[-1][0], end, arm)
        else:
            out.append((start, end, arm))
    return tuple(out)


class Assigner:
    """user id -> holdout or arm, for one experiment on one night."""

    def __init__(self, experiment_id: str, holdout: float, layout: Layout):
        self.experiment_id = experiment_id
        self._threshold = holdout_threshold(holdout)
        self._layout = layout
        self._starts = layout._starts

    def arm_of(self, user_id: Optional[str]) -> Optional[str]:
        if user_id is None:
            return None
        h = user_hash(self.experiment_id, user_id)
        if h < self._threshold:
            return HOLDOUT
        v = (h - self._threshold) * UNITS // (_SPACE - self._threshold)
        return self._layout.intervals[bisect.bisect_right(self._starts, v) - 1][2]


class AssignArms:
    """Ray Data stage: adds ``experiment_id`` and ``arm`` to rows by their user id.

    Rows of holdout users get arm ``holdout``: send them to the holdout file
    (``holdout_rows``), never to rendering or the engine."""

    def __init__(self, experiment_id: str, holdout: float, layout: list):
        self._assigner = Assigner(experiment_id, holdout, Layout.from_json(layout))

    def __call__(self, batch: pa.Table) -> pa.Table:
        users = batch[C.USER_ID].to_pylist()
        arms = [self._assigner.arm_of(u) for u in users]
        batch = batch.append_column(
            EXPERIMENT_ID, pa.array([self._assigner.experiment_id] * len(users), pa.string())
        )
        return batch.append_column(ARM, pa.array(arms, pa.string()))


# The published holdout file: one row per (pair, channel) a holdout user would
# have received. Its row ids are where downstream reports holdout outcomes.
HOLDOUT_SCHEMA = pa.schema(
    [
        (C.ROW_ID, pa.string()),
        (C.RUN_ID, pa.string()),
        (C.RUN_DATE, pa.date32()),
        (C.CAMPAIGN_ID, pa.string()),
        (EXPERIMENT_ID, pa.string()),
        (ARM, pa.string()),
        (C.USER_ID, pa.string()),
        (C.PRODUCT_ID, pa.string()),
        (C.CHANNEL, pa.string()),
        (C.LOCALE, pa.string()),
    ]
)


def holdout_row_id(run_id: str, campaign: Optional[str], user: str, product: str, channel: str) -> str:
    """A holdout row's id: the copy row id's recipe with ``holdout`` for the
    variant, so it can never equal a copy's id."""
    from factory.stages.join import row_id

    return row_id(run_id, campaign, user, product, channel, HOLDOUT)


class HoldoutRows:
    """Holdout rows (arm ``holdout``, variant 0 only: one per pair and channel) in HOLDOUT_SCHEMA."""

    def __init__(self, run_id: str, run_date):
        self._run_id = run_id
        self._run_date = run_date

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow.compute as pc

        rows = batch.filter(pc.and_(pc.equal(batch[ARM], HOLDOUT), pc.equal(batch[C.VARIANT], 0)))
        n = rows.num_rows
        ids = [
            holdout_row_id(self._run_id, c, u, p, ch)
            for c, u, p, ch in zip(
                rows[C.CAMPAIGN_ID].to_pylist(),
                rows[C.USER_ID].to_pylist(),
                rows[C.PRODUCT_ID].to_pylist(),
                rows[C.CHANNEL].to_pylist(),
            )
        ]
        locale = rows[C.LOCALE] if C.LOCALE in rows.column_names else pa.nulls(n, pa.string())
        return pa.table(
            [
                pa.array(ids, pa.string()),
                pa.array([self._run_id] * n, pa.string()),
                pa.array([self._run_date] * n, pa.date32()),
                rows[C.CAMPAIGN_ID],
                rows[EXPERIMENT_ID],
                rows[ARM],
                rows[C.USER_ID],
                rows[C.PRODUCT_ID],
                rows[C.CHANNEL],
                locale.cast(pa.string()),
            ],
            schema=HOLDOUT_SCHEMA,
        )
