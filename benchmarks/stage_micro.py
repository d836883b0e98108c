"""Each CPU stage alone, on one batch, outside Ray: rows/s per stage.

    .venv/bin/python benchmarks/stage_micro.py --rows 50000
    .venv/bin/python benchmarks/stage_micro.py --rows 50000 --profile QualityGate
    .venv/bin/python benchmarks/stage_micro.py --smoke          # 300 rows, for CI

The batch is ``cpu_side``'s synthetic data (one pair = one row). The stages
run in pipeline order, each on the previous one's output, one call each on
the whole batch, in this process (one core): JoinProfiles, RenderPrompts,
the echo engine (not a pipeline stage: it only supplies the copy),
QualityGate, FinalizeRows, WriteParquetFiles (to a temp folder).

Prints one JSON document: CPU seconds and rows per CPU-second per stage
(the figure to compare on a shared machine), wall seconds and rows/s, and a digest of each
stage's output (``generated_at`` left out), so a speed-up can show it
changed no output. ``--profile NAME`` also prints that stage's cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from cpu_side import RUN_DATE, EchoEngine, _git_commit, machine, synthetic_inputs  # noqa: E402

from factory import columns as C  # noqa: E402
from factory.config import JobConfig  # noqa: E402
from factory.prompts import load_templates  # noqa: E402
from factory.stages import FinalizeRows, JoinProfiles, QualityGate, RenderPrompts, WriteParquetFiles  # noqa: E402
from factory.stages.write import Sink  # noqa: E402
from factory.storage import resolve  # noqa: E402

STAGES = ("JoinProfiles", "RenderPrompts", "EchoEngine", "QualityGate", "FinalizeRows", "WriteParquetFiles")


def digest(table: pa.Table) -> str:
    """sha256 of the table's rows in order (without the wall-clock column)."""
    keep = [c for c in table.column_names if c != C.GENERATED_AT]
    h = hashlib.sha256()
    for batch in table.select(keep).combine_chunks().to_batches(max_chunksize=10_000):
        h.update(json.dumps(batch.to_pylist(), sort_keys=True, default=str, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def build_stages(paths: dict[str, str], out_dir: Path, reject_share: float) -> dict[str, Any]:
    users, products = pq.read_table(paths["users"]), pq.read_table(paths["products"])
    config = JobConfig()
    templates = load_templates()
    keys = [
        C.ROW_ID,
        C.USER_ID,
        C.PRODUCT_ID,
        C.CHANNEL,
        C.CAMPAIGN_ID,
        C.VARIANT,
        C.LOCALE,
        C.TEMPLATE_VERSION,
        *C.USERS_LIST_FIELDS,  # the user's profile, which the gate reads from the row
    ]
    return {
        "JoinProfiles": JoinProfiles(
            users,
            products,
            channels=config.channels,
            known_channels=list(templates),
            variants=1,
            campaign=None,
            run_id="bench",
        ),
        "RenderPrompts": RenderPrompts(templates),
        "EchoEngine": EchoEngine(keys + [C.MESSAGES, C.STOP, "brand"], reject_share),
        "QualityGate": quality_gate(products, users, config.quality, templates, draft=1),
        "FinalizeRows": FinalizeRows("bench", RUN_DATE, "echo"),
        "WriteParquetFiles": WriteParquetFiles({"copies": Sink(resolve(str(out_dir)))}),
    }


def quality_gate(products, users, policy, templates, **kwargs):
    """The gate as this tree builds it: rows carry their user's profile; an
    older tree's gate (benchmarks compare against exports) took the users table."""
    import inspect

    if "users" in inspect.signature(QualityGate).parameters:
        return QualityGate(products, users, policy, templates, **kwargs)
    return QualityGate(products, policy, templates, **kwargs)


def staged_pairs(paths: dict[str, str], rows: int) -> pa.Table:
    """What the join gets in a run: staged rows (pair keys and variant 0)."""
    pairs = pq.read_table(paths["pairs"]).slice(0, rows)
    return pairs.append_column(C.VARIANT, pa.array([0] * pairs.num_rows, pa.int32()))


def run(
    rows: int, cache: Path | None, reject_share: float, profile: str | None, repeat: int
) -> dict[str, Any]:
    paths = synthetic_inputs(rows, cache)
    out_dir = Path(tempfile.mkdtemp(prefix="stage-micro-"))
    t0 = time.time()
    stages = build_stages(paths, out_dir, reject_share)
    setup_s = time.time() - t0
    batch = staged_pairs(paths, rows)
    figures: dict[str, Any] = {}
    profiles = {}
    for name in STAGES:
        stage = stages[name]
        best, best_cpu, out = float("inf"), float("inf"), None
        for _ in range(repeat):
            # The gate keeps per-product caches: a fresh one each time, so a
            # repeat measures what one batch of a run costs.
            if name == "QualityGate" and out is not None:
                stage = build_stages(paths, out_dir, reject_share)[name]
            prof = cProfile.Profile() if name == profile else None
            start, start_cpu = time.perf_counter(), time.process_time()
            if prof:
                prof.enable()
            out = stage(batch)
            if prof:
                prof.disable()
                profiles[name] = prof
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - start_cpu)
        # CPU time of this process is the figure to compare on a shared
        # machine: wall time also counts the time other jobs held the core.
        figures[name] = {
            "cpu_seconds": round(best_cpu, 3),
            "rows_per_cpu_s": round(batch.num_rows / best_cpu),
            "wall_seconds": round(best, 3),
            "rows_per_s": round(batch.num_rows / best),
            "rows_in": batch.num_rows,
            "digest": digest(out),
        }
        if name == "QualityGate":
            figures[name]["status"] = dict(
                zip(*[x.to_pylist() for x in pa.compute.value_counts(out[C.STATUS]).flatten()])
            )
        batch = out
    for _name, prof in profiles.items():
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(30)
        print(s.getvalue(), file=sys.stderr)
    return {
        "benchmark": "stage_micro",
        "command": " ".join([".venv/bin/python", "benchmarks/stage_micro.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": {**machine(), "note": "shared machine: other jobs ran on the same 2 cores"},
        "rows": rows,
        "repeat": repeat,
        "setup_s": round(setup_s, 2),
        "stages": figures,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="Rows in the batch.")
    parser.add_argument("--pairs", type=int, default=None, help="Same as --rows (one pair is one row).")
    parser.add_argument("--smoke", action="store_true", help="300 rows: checks the benchmark runs (CI).")
    parser.add_argument("--repeat", type=int, default=1, help="Calls per stage; the fastest is reported.")
    parser.add_argument("--reject-share", type=float, default=0.03, help="As in cpu_side.py.")
    parser.add_argument(
        "--profile", choices=STAGES, default=None, help="Print this stage's cProfile to stderr."
    )
    parser.add_argument("--cache", type=Path, default=None, help="Where synthetic inputs are kept (per N).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this file.")
    args = parser.parse_args(argv)
    rows = 300 if args.smoke else (args.pairs or args.rows)
    figures = run(rows, args.cache, args.reject_share, args.profile, args.repeat)
    text = json.dumps(figures, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return figures


if __name__ == "__main__":
    main()
