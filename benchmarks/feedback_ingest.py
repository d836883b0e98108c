"""What the feedback ingest costs per event on this machine, end to end.

    .venv/bin/python benchmarks/feedback_ingest.py --rows 100000 400000 --partitions 4

Writes one published night of ``--rows`` copies (two arms, plus a 5 % holdout
file) and delivery events for it: an impression for every row, a click for
3 % and a conversion for 1 %, and 0.5 % bad events (unknown rows, duplicate
impressions), in 8 files. Then runs ``factory.experiments.feedback.run`` on a
local Ray of ``--cpus`` CPUs and reports wall time and events per second
(the Ray start-up of the first size included; later sizes reuse it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory import columns as C  # noqa: E402
from factory.experiments.assign import ARM, EXPERIMENT_ID, HOLDOUT_SCHEMA  # noqa: E402
from factory.experiments.feedback import FeedbackJobConfig, run  # noqa: E402
from factory.publish import Attempt, publish  # noqa: E402
from factory.reader import run_location  # noqa: E402
from factory.storage import resolve, write_parquet  # noqa: E402

EVENT_FILES = 8


def make_inputs(folder: Path, rows: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    runs = resolve(str(folder / "nightly"))
    attempt = Attempt(run_location(runs, dt.date(2026, 12, 1), "spring"), 1)
    ids = np.array([f"r{i:09d}" for i in range(rows)])
    held = rng.random(rows) < 0.05
    arms = np.where(rng.random(rows) < 0.5, "cosy", "crisp")
    copies = pa.table(
        {
            C.ROW_ID: ids[~held],
            C.CAMPAIGN_ID: ["spring"] * int((~held).sum()),
            EXPERIMENT_ID: ["e1"] * int((~held).sum()),
            ARM: arms[~held],
            C.TEMPLATE_VERSION: np.char.add("push@", arms[~held]),
            C.CHANNEL: ["push"] * int((~held).sum()),
            C.LOCALE: ["en-US"] * int((~held).sum()),
        }
    )
    n_held = int(held.sum())
    holdout = pa.table(
        {
            C.ROW_ID: ids[held],
            C.RUN_ID: ["2026-12-01_spring"] * n_held,
            C.RUN_DATE: [dt.date(2026, 12, 1)] * n_held,
            C.CAMPAIGN_ID: ["spring"] * n_held,
            EXPERIMENT_ID: ["e1"] * n_held,
            ARM: ["holdout"] * n_held,
            C.USER_ID: ids[held],
            C.PRODUCT_ID: ["P1"] * n_held,
            C.CHANNEL: ["push"] * n_held,
            C.LOCALE: ["en-US"] * n_held,
        },
        schema=HOLDOUT_SCHEMA,
    )
    sc = write_parquet(attempt.copies.join("part-a.parquet"), copies)
    sh = write_parquet(attempt.base.join("holdout", "part-a.parquet"), holdout)
    publish(
        attempt,
        {
            "run_id": "2026-12-01_spring",
            "attempt": 1,
            "files": {
                "copies": [{"path": "copies/part-a.parquet", "rows": copies.num_rows, "bytes": sc}],
                "holdout": [{"path": "holdout/part-a.parquet", "rows": n_held, "bytes": sh}],
            },
        },
    )
    clicked = (rng.random(rows) < 0.03) & ~held
    converted = rng.random(rows) < 0.01
    bad = rng.random(rows) < 0.005
    ev_ids = np.concatenate([ids, ids[clicked], ids[converted], ids[bad], np.char.add("x", ids[bad])])
    kinds = np.concatenate(
        [
            np.full(rows, "impression"),
            np.full(clicked.sum(), "click"),
            np.full(converted.sum(), "conversion"),
            np.full(bad.sum(), "impression"),
            np.full(bad.sum(), "impression"),
        ]
    )
    ts = np.datetime64("2026-12-01T09:00:00") + rng.integers(0, 86_400, len(ev_ids)).astype("timedelta64[s]")
    order = rng.permutation(len(ev_ids))
    events = pa.table(
        {C.ROW_ID: ev_ids[order], "event_type": kinds[order], "ts": pa.array(ts[order], pa.timestamp("us"))}
    )
    (folder / "events").mkdir(parents=True, exist_ok=True)
    per = -(-events.num_rows // EVENT_FILES)
    for k in range(EVENT_FILES):
        pq.write_table(
            events.slice(k * per, per), folder / "events" / f"part-{k}.parquet", row_group_size=100_000
        )
    return events.num_rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 400_000], help="Published rows (sizes)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--json", help="Also write the figures to this file")
    args = p.parse_args(argv)
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    sizes = []
    try:
        for rows in args.rows:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                events = make_inputs(folder, rows)
                t0 = time.perf_counter()
                result = run(
                    FeedbackJobConfig(
                        events=str(folder / "events"),
                        runs=str(folder / "nightly"),
                        output=str(folder / "feedback"),
                        partitions=args.partitions,
                    )
                )
                seconds = time.perf_counter() - t0
                sizes.append(
                    {
                        "published_rows": rows,
                        "events": events,
                        "seconds": round(seconds, 1),
                        "events_per_s": round(events / seconds),
                        "counted": result.events_counted,
                        "rejected": result.events_rejected,
                        "keys": result.keys,
                    }
                )
    finally:
        ray.shutdown()
    figures = {
        "command": ".venv/bin/python benchmarks/feedback_ingest.py " + " ".join(argv or sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "sizes": sizes,
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return figures


if __name__ == "__main__":
    main()
