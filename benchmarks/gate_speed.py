"""The quality gate alone, on one core: rows per CPU-second, median of several runs.

    .venv/bin/python benchmarks/gate_speed.py --rows 20000 --repeat 5
    PYTHONPATH=/tmp/gate-before .venv/bin/python benchmarks/gate_speed.py --rows 20000 --repeat 5

The second line times another tree's gate (``git archive <commit> factory |
tar -x -C /tmp/gate-before``): the batch is built the same way, only the
``factory`` package imported differs, so before and after see the same rows.

The batch is ``stage_micro``'s (synthetic pairs joined, rendered and answered
by the echo engine, about 3% written to fail). ``--probe`` times the
hand-written copies of ``tests/cpu/gate_probe.yaml`` instead (hostile and
benign, a third Chinese, repeated to ``--rows``): the gate's cost on copy
that trips its rules. Each run builds a fresh gate (its per-product caches start
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
from stage_micro import build_stages, quality_gate, staged_pairs  # noqa: E402

import factory  # noqa: E402
from factory import columns as C  # noqa: E402


def gate_batch(rows: int, cache: Path | None, reject_share: float):
    paths = synthetic_inputs(rows, cache)
    stages = build_stages(paths, Path(tempfile.mkdtemp(prefix="gate-speed-")), reject_share)
    batch = staged_pairs(paths, rows)
    for name in ("JoinProfiles", "RenderPrompts", "EchoEngine"):
        batch = stages[name](batch)
    return paths, batch


def probe_batch(rows: int):
    """The probe's copies repeated to ``rows`` rows, and a gate factory for them
    (an older tree's gate, without offers or competitors, gets neither)."""
    import inspect

    import pyarrow as pa
    import yaml

    from factory.prompts import load_templates
    from factory.quality.policy import QualityPolicy
    from factory.stages.gate import QualityGate

    spec = yaml.safe_load(
        (Path(__file__).parents[1] / "tests/cpu/gate_probe.yaml").read_text(encoding="utf-8")
    )
    products = pa.Table.from_pylist([{C.PRODUCT_ID: k, **v} for k, v in spec["products"].items()])
    users = pa.Table.from_pylist([{C.USER_ID: k, **v} for k, v in spec["users"].items()])
    copies = [r for g in spec["hostile"].values() for r in g["copies"]] + spec["benign"]
    copies = (copies * (rows // len(copies) + 1))[:rows]
    # Each row carries its user's profile, as the run's rows do.
    fields = (C.LOCALE, *C.USERS_LIST_FIELDS, "email")
    profile = {uid: {f: u.get(f) for f in fields} for uid, u in spec["users"].items()}
    batch = pa.Table.from_pylist(
        [{C.PRODUCT_ID: p, C.USER_ID: u, C.CHANNEL: ch, C.TEXT: t, **profile[u]} for p, u, ch, t in copies]
    )
    extra = {}
    if "offers" in inspect.signature(QualityGate).parameters:
        from factory.quality.policy import Offer

        extra = {
            "offers": [Offer(**o) for o in spec["campaign"]["offers"]],
            "competitors": spec["campaign"]["competitors"],
        }
    return batch, lambda: quality_gate(products, users, QualityPolicy(), load_templates(), **extra)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5, help="Runs; the median is reported.")
    parser.add_argument("--reject-share", type=float, default=0.03)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--probe", action="store_true", help="Time the probe's hand-written copies instead.")
    args = parser.parse_args(argv)

    if args.probe:
        batch, new_gate = probe_batch(args.rows)
    else:
        paths, batch = gate_batch(args.rows, args.cache, args.reject_share)

        def new_gate():
            return build_stages(paths, Path(tempfile.mkdtemp(prefix="gate-speed-")), args.reject_share)[
                "QualityGate"
            ]

    cpu, wall = [], []
    out = None
    for _ in range(args.repeat):
        gate = new_gate()
        start, start_cpu = time.perf_counter(), time.process_time()
        out = gate(batch)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    status = out[C.STATUS].value_counts().to_pylist()
    figures = {
        "benchmark": "gate_speed",
        "factory": str(Path(factory.__file__).parent),
        "copies": "probe" if args.probe else "synthetic",
        "rows": batch.num_rows,
        "repeat": args.repeat,
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
