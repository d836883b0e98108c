"""The run summary's verdict counts, added up file by file and columnar."""

import random
from collections import Counter

import pyarrow as pa

from factory import columns as C
from factory.quality.summary import QualityTally, quality_summary

REASONS = ["too_long", "banned_claim", "pii", "wrong_price", "language"]


def _verdicts(n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        attempt = rng.choice([1, 1, 2, None])
        rows.append(
            {
                C.CHANNEL: rng.choice(["push", "sms", "email_subject"]),
                C.STATUS: rng.choice(C.STATUSES),
                C.REASONS: rng.choice([None, [], rng.sample(REASONS, rng.randint(1, 3))]),
                C.DRAFT: attempt,
                C.FIRST_DRAFT_REASONS: rng.sample(REASONS, rng.randint(1, 2)) if attempt == 2 else None,
            }
        )
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                (C.CHANNEL, pa.string()),
                (C.STATUS, pa.string()),
                (C.REASONS, pa.list_(pa.string())),
                (C.DRAFT, pa.int32()),
                (C.FIRST_DRAFT_REASONS, pa.list_(pa.string())),
            ]
        ),
    )


def _row_by_row(verdicts: pa.Table) -> dict:
    """The summary counted one row at a time, as the definition reads."""
    status, before_status, repaired = (Counter({s: 0 for s in C.STATUSES}) for _ in range(3))
    by_channel, reasons_by_channel, by_reason, before_reason = {}, {}, Counter(), Counter()
    for row in verdicts.to_pylist():
        st, ch, why = row[C.STATUS], row[C.CHANNEL], row[C.REASONS] or []
        status[st] += 1
        by_channel.setdefault(ch, Counter({s: 0 for s in C.STATUSES}))[st] += 1
        by_reason.update(why)
        reasons_by_channel.setdefault(ch, Counter()).update(why)
        if row[C.DRAFT] == 2:
            before_status[C.REJECTED] += 1
            before_reason.update(row[C.FIRST_DRAFT_REASONS] or [])
            repaired[st] += 1
        else:
            before_status[st] += 1
            before_reason.update(why)
    return {
        "status": dict(status),
        "by_channel": {k: dict(v) for k, v in by_channel.items()},
        "reasons": dict(by_reason),
        "reasons_by_channel": {k: dict(v) for k, v in reasons_by_channel.items()},
        "before_status": dict(before_status),
        "before_reason": dict(before_reason),
        "repaired": dict(repaired),
    }


def test_tally_over_files_equals_counting_row_by_row():
    parts = [_verdicts(n, seed) for seed, n in enumerate((300, 0, 57, 211))]
    tally = QualityTally()
    for part in parts:
        tally.add(part)
    got = tally.summary()
    want = _row_by_row(pa.concat_tables(parts))
    assert got["rows"] == 568
    assert got["status"] == want["status"] and got["status_by_channel"] == want["by_channel"]
    assert got["reasons"] == want["reasons"] and got["reasons_by_channel"] == want["reasons_by_channel"]
    assert got["before_repair"]["status"] == want["before_status"]
    assert got["before_repair"]["reasons"] == want["before_reason"]
    assert got["repair"]["outcome"] == want["repaired"]
    assert got["repair"]["attempted"] == sum(want["repaired"].values()) > 0
    assert tally.rows_by_channel() == {ch: sum(c.values()) for ch, c in want["by_channel"].items()}
    # Most frequent reason first.
    assert list(got["reasons"].values()) == sorted(got["reasons"].values(), reverse=True)
    assert quality_summary(pa.concat_tables(parts)) == got


def test_no_rows_gives_zero_counts():
    summary = quality_summary(_verdicts(0, 1))
    assert summary["rows"] == 0 and summary["status"] == {s: 0 for s in C.STATUSES}
    assert summary["repair"] == {"attempted": 0, "outcome": {s: 0 for s in C.STATUSES}, "fixed_share": None}


def test_tallies_kept_as_json_add_up_to_the_one_pass_summary():
    import json

    parts = [_verdicts(n, seed) for seed, n in enumerate((120, 0, 33, 75), start=10)]
    merged = QualityTally()
    for part in parts:
        one = QualityTally()
        one.add(part)
        merged += QualityTally.from_state(json.loads(json.dumps(one.state())))  # as a file footer keeps it
    whole = quality_summary(pa.concat_tables(parts))
    assert merged.summary() == whole and merged.rows == 228
    assert merged.rows_by_channel() == {ch: sum(c.values()) for ch, c in whole["status_by_channel"].items()}
