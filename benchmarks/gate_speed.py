"""The quality gate alone, on one core: rows per CPU-second, median of several runs.

    .venv/bin/python benchmarks/gate_speed.py --rows 20000 --repeat 5
    PYTHONPATH=/tmp/gate-before .venv/bin/python benchmarks/gate_speed.py --rows 20000 --repeat 5

The second line times another tree's gate (``git archive <commit> factory |
tar -x -C /tmp/gate-before``): the batch is built the same way, only the
``factory`` package imported differs, so before and after see the same rows.

The batch is ``stage_micro``'s (synthetic pairs joined, rendered and answered
by the echo engine, about 3% written to fail). Each run builds a fresh gate (its per-product caches start
empty, as in a new actor) and calls it once on the whole batch; CPU time of
this process is the figure (wall time also counts other jobs on a shared
machine). Run it pinned (``taskset -c 0``) to keep it on one core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cpu_side import machine, synthetic_inputs  # noqa: E402
from stage_micro import build_stages, staged_pairs  # noqa: E402

import factory  # noqa: E402
from factory import columns as C  # noqa: E402


def gate_batch(rows: int, cache: Path | None, reject_share: float):
    paths = synthetic_inputs(rows, cache)
    stages = build_stages(paths, Path(tempfile.mkdtemp(prefix="gate-speed-")), reject_share)
    batch = staged_pairs(paths, rows)
    for name in ("JoinProfiles", "RenderPrompts", "EchoEngine"):
        batch = stages[name](batch)
    return paths, batch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5, help="Runs; the median is reported.")
    parser.add_argument("--reject-share", type=float, default=0.03)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)

    paths, batch = gate_batch(args.rows, args.cache, args.reject_share)
    cpu, wall = [], []
    out = None
    for _ in range(args.repeat):
        gate = build_stages(paths, Path(tempfile.mkdtemp(prefix="gate-speed-")), args.reject_share)["QualityGate"]
        start, start_cpu = time.perf_counter(), time.process_time()
        out = gate(batch)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    status = out[C.STATUS].value_counts().to_pylist()
    figures = {
        "benchmark": "gate_speed",
        "factory": str(Path(factory.__file__).parent),
        "rows": batch.num_rows, "repeat": args.repeat,
        "rows_per_cpu_s_median": round(batch.num_rows / statistics.median(cpu)),
        "rows_per_cpu_s_runs": [round(batch.num_rows / c) for c in cpu],
        "rows_per_s_wall_median": round(batch.num_rows / statistics.median(wall)),
        "status": {s["values"]: s["counts"] for s in status},
        "machine": machine(),
    }
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
