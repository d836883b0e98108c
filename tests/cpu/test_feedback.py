"""The feedback ingest end to end: real Ray Data, real Parquet, real manifests, local and S3 (moto over HTTP).

Two published nights of one campaign (copies of two arms, and a holdout file)
and two events files with one of each kind of bad event. Every event is
either counted or set aside with its file, row and reason; a rerun gives the
same table byte for byte; the table feeds the allocation.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory.experiments.assign import ARM, EXPERIMENT_ID, HOLDOUT_SCHEMA
from factory.experiments.bandit import ArmStats, arm_stats
from factory.experiments.table import FEEDBACK_SCHEMA, read_feedback
from factory.publish import Attempt, publish
from factory.reader import run_location
from factory.storage import resolve, write_parquet
from jobs import ingest_feedback

UTC = dt.timezone.utc
COPY_COLUMNS = pa.schema(
    [
        (C.ROW_ID, pa.string()),
        (C.CAMPAIGN_ID, pa.string()),
        (EXPERIMENT_ID, pa.string()),
        (ARM, pa.string()),
        (C.TEMPLATE_VERSION, pa.string()),
        (C.CHANNEL, pa.string()),
        (C.LOCALE, pa.string()),
        (C.TEXT, pa.string()),
    ]
)


def _ts(hour: int, day: int = 2) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, tzinfo=UTC)


def _copies(night: int) -> list[dict]:
    rows = []
    for i in range(4):
        arm = "cosy" if i % 2 == 0 else "crisp"
        rows.append(
            {
                C.ROW_ID: f"n{night}-r{i}",
                C.CAMPAIGN_ID: "spring",
                EXPERIMENT_ID: "voice_1",
                ARM: arm,
                C.TEMPLATE_VERSION: f"push@{arm}",
                C.CHANNEL: "push",
                C.LOCALE: "en-US",
                C.TEXT: "copy",
            }
        )
    return rows


def _holdout(night: int) -> list[dict]:
    return [
        {
            C.ROW_ID: f"n{night}-h0",
            C.RUN_ID: f"2026-12-0{night}_spring",
            C.RUN_DATE: dt.date(2026, 12, night),
            C.CAMPAIGN_ID: "spring",
            EXPERIMENT_ID: "voice_1",
            ARM: "holdout",
            C.USER_ID: "U9",
            C.PRODUCT_ID: "P1",
            C.CHANNEL: "push",
            C.LOCALE: "en-US",
        }
    ]


def publish_night(output, night: int) -> None:
    """A published run as the nightly job leaves one: files, then the manifest that lists them."""
    run = run_location(output, dt.date(2026, 12, night), "spring")
    attempt = Attempt(run, 1)
    copies = pa.Table.from_pylist(_copies(night), schema=COPY_COLUMNS)
    held = pa.Table.from_pylist(_holdout(night), schema=HOLDOUT_SCHEMA)
    size_c = write_parquet(attempt.copies.join("part-a.parquet"), copies)
    size_h = write_parquet(attempt.base.join("holdout", "part-a.parquet"), held)
    # A file no manifest lists: its rows are not published, so events about them are unknown.
    write_parquet(
        attempt.copies.join("part-stray.parquet"),
        pa.Table.from_pylist([{**_copies(night)[0], C.ROW_ID: f"n{night}-stray"}], schema=COPY_COLUMNS),
    )
    publish(
        attempt,
        {
            "run_id": f"2026-12-0{night}_spring",
            "attempt": 1,
            "files": {
                "copies": [{"path": "copies/part-a.parquet", "rows": 4, "bytes": size_c}],
                "holdout": [{"path": "holdout/part-a.parquet", "rows": 1, "bytes": size_h}],
            },
        },
    )


EVENTS_A = [  # file a
    ("n1-r0", "impression", _ts(9)),
    ("n1-r0", "click", _ts(10)),
    ("n1-r0", "conversion", _ts(11)),
    ("n1-r1", "impression", _ts(9)),
    ("n1-r2", "impression", _ts(9)),
    ("n1-r2", "click", _ts(12)),
    ("n1-r3", "impression", _ts(9)),
    ("n1-h0", "impression", _ts(9)),
    ("n1-h0", "conversion", _ts(15)),
    ("n1-r0", "impression", _ts(8)),  # row 9: earlier than row 0, so row 0 is the duplicate
    ("n1-stray", "impression", _ts(9)),  # row 10: unknown_row_id (not in any manifest)
    ("n1-r1", "open", _ts(9)),  # row 11: unknown_event_type
    (None, "click", _ts(9)),  # row 12: null_row_id
]
EVENTS_B = [  # file b: night 2, naive timestamps in nanoseconds
    ("n2-r0", "impression", _ts(9, 3)),
    ("n2-r1", "impression", _ts(9, 3)),
    ("n2-r1", "click", _ts(9, 3)),
    ("n2-r3", "click", _ts(9, 3)),  # row 3: click_without_impression
    ("n2-h0", "impression", _ts(9, 3)),
    ("n2-h0", "click", _ts(10, 3)),  # row 5: click_on_holdout
    ("n2-r0", "impression", None),  # row 6: null_timestamp
    ("n2-r0", "impression", _ts(9, 3)),  # row 7: duplicate_event (same time: the later row goes)
]


def write_events(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    a = pa.table(
        {
            C.ROW_ID: [r for r, _, _ in EVENTS_A],
            "event_type": [e for _, e, _ in EVENTS_A],
            "ts": pa.array([t for _, _, t in EVENTS_A], pa.timestamp("us", tz="UTC")),
            "ip_address": ["10.0.0.1"] * len(EVENTS_A),
        }
    )  # never read
    b = pa.table(
        {
            C.ROW_ID: [r for r, _, _ in EVENTS_B],
            "event_type": [e for _, e, _ in EVENTS_B],
            "ts": pa.array(
                [t.replace(tzinfo=None) if t else None for _, _, t in EVENTS_B], pa.timestamp("ns")
            ),
        }
    )
    pq.write_table(a, folder / "a.parquet", row_group_size=5)  # several row groups: several read tasks
    pq.write_table(b, folder / "b.parquet")


EXPECTED_REJECTS = [
    ("a.parquet", 0, "duplicate_event"),
    ("a.parquet", 10, "unknown_row_id"),
    ("a.parquet", 11, "unknown_event_type"),
    ("a.parquet", 12, "null_row_id"),
    ("b.parquet", 3, "click_without_impression"),
    ("b.parquet", 5, "click_on_holdout"),
    ("b.parquet", 6, "null_timestamp"),
    ("b.parquet", 7, "duplicate_event"),
]


def _table(output: str, endpoint=None) -> tuple[pa.Table, dict]:
    return read_feedback(resolve(output, endpoint))


def _check(table: pa.Table, summary: dict, rejects: pa.Table, events_dir: str) -> None:
    assert table.schema == FEEDBACK_SCHEMA
    rows = {(r[ARM], r[C.TEMPLATE_VERSION]): r for r in table.to_pylist()}
    assert set(rows) == {("cosy", "push@cosy"), ("crisp", "push@crisp"), ("holdout", None)}
    cosy, crisp, held = rows[("cosy", "push@cosy")], rows[("crisp", "push@crisp")], rows[("holdout", None)]
    assert (cosy["impressions"], cosy["clicks"], cosy["conversions"]) == (3, 2, 1)  # n1-r0, n1-r2, n2-r0
    assert (crisp["impressions"], crisp["clicks"], crisp["conversions"]) == (3, 1, 0)  # n1-r1, n1-r3, n2-r1
    assert (held["impressions"], held["clicks"], held["conversions"]) == (2, 0, 1)
    assert cosy["ctr"] == pytest.approx(2 / 3) and cosy["ctr_low"] < 2 / 3 < cosy["ctr_high"]
    assert cosy["first_event_at"] == _ts(8) and cosy["last_event_at"] == _ts(9, 3)
    got = [(Path(r[C.SOURCE]).name, r[C.SOURCE_ROW], r[C.REASON]) for r in rejects.to_pylist()]
    assert sorted(got) == EXPECTED_REJECTS
    assert all(r[C.SOURCE].startswith(events_dir) for r in rejects.to_pylist())
    ev = summary["events"]
    assert ev["read"] == len(EVENTS_A) + len(EVENTS_B) == ev["counted"] + ev["rejected"]
    assert ev["rejected"] == len(EXPECTED_REJECTS) and ev["rejected_by_reason"]["duplicate_event"] == 2
    assert summary["runs"]["count"] == 2 and summary["totals"] == {
        "impressions": 8,
        "clicks": 3,
        "conversions": 2,
    }
    assert arm_stats(table, "spring", "voice_1") == {
        "cosy": ArmStats(3, 2, 1),
        "crisp": ArmStats(3, 1, 0),
        "holdout": ArmStats(2, 0, 1),
    }


def test_ingest_locally_and_again_gives_the_same_table(tmp_path, local_ray, capsys):
    runs = resolve(str(tmp_path / "nightly"))
    publish_night(runs, 1)
    publish_night(runs, 2)
    write_events(tmp_path / "events")
    argv = [
        "--events",
        str(tmp_path / "events"),
        "--runs",
        str(tmp_path / "nightly"),
        "--output",
        str(tmp_path / "feedback"),
        "--partitions",
        "3",
    ]
    assert ingest_feedback.main(argv) == 0
    assert "21 read, 13 counted, 8 set aside" in capsys.readouterr().out
    table, summary = _table(str(tmp_path / "feedback"))
    rejects = pq.read_table(tmp_path / "feedback" / "rejects")
    _check(table, summary, rejects, str(tmp_path / "events"))
    first = (tmp_path / "feedback" / "feedback.parquet").read_bytes()
    assert ingest_feedback.main(argv[:-1] + ["2"]) == 0  # other buckets, same table
    assert (tmp_path / "feedback" / "feedback.parquet").read_bytes() == first
    # The earlier ingest's files went first: a bucket the rerun does not have leaves no stale rejects.
    assert {p.name for p in (tmp_path / "feedback" / "rejects").iterdir()} <= {
        "part-00000.parquet",
        "part-00001.parquet",
    }
    _check(
        *_table(str(tmp_path / "feedback")),
        pq.read_table(tmp_path / "feedback" / "rejects"),
        str(tmp_path / "events"),
    )
    # Only one night: the other night's events are unknown rows, still none lost.
    assert ingest_feedback.main(argv + ["--since", "2026-12-02"]) == 0
    _, summary = _table(str(tmp_path / "feedback"))
    assert summary["runs"]["count"] == 1 and summary["events"]["rejected_by_reason"]["unknown_row_id"] > 1
    assert summary["events"]["read"] == summary["events"]["counted"] + summary["events"]["rejected"]


def test_ingest_on_s3(s3_server, s3_bucket, tmp_path, local_ray):
    runs = resolve(f"s3://{s3_bucket}/nightly", s3_server)
    publish_night(runs, 1)
    publish_night(runs, 2)
    write_events(tmp_path / "events")
    events = resolve(f"s3://{s3_bucket}/delivery", s3_server)
    for f in ("a.parquet", "b.parquet"):
        with events.fs.open_output_stream(events.join(f).path) as out:
            out.write((tmp_path / "events" / f).read_bytes())
    assert (
        ingest_feedback.main(
            [
                "--events",
                f"s3://{s3_bucket}/delivery",
                "--runs",
                f"s3://{s3_bucket}/nightly",
                "--output",
                f"s3://{s3_bucket}/feedback",
                "--s3-endpoint",
                s3_server,
            ]
        )
        == 0
    )
    table, summary = _table(f"s3://{s3_bucket}/feedback", s3_server)
    out = resolve(f"s3://{s3_bucket}/feedback", s3_server)
    rejects = pq.read_table(out.join("rejects").path, filesystem=out.fs)
    _check(table, summary, rejects, f"s3://{s3_bucket}/delivery")
