"""Candidates (``--candidates K``) against today's repair pass, on the bundled
sample data with the bundled model.

    flock /tmp/engine.lock .venv/bin/python benchmarks/candidates.py --limit 40
    flock /tmp/engine.lock .venv/bin/python benchmarks/candidates.py --smoke   # 4 pairs: does it run?

Runs the nightly job (``factory.pipeline.run``, bundled sample pairs, first
``--limit`` of them) once per arm, each in its own process (fresh Ray, fresh
engine), one after another:

    baseline     K=1, repair on   (today's job)
    K=2, K=4     K draws, the best kept, repair on (what is still rejected
                 gets today's repair draw)
    K=2/4 norep  the same without the repair pass

and reports per arm, from the published rows, the summary and the draws
kept back from ``_work/candidates`` before the run removes them:

- first-pass acceptance: owed rows whose first draft (for K > 1: the kept
  draw) the gate accepted, over owed rows;
- final acceptance, after the repair pass;
- accepted copies per engine-second: accepted rows over the seconds of the
  passes that ran the engine (candidates or first drafts, repair), engine
  start-up included, and over the whole run;
- output tokens per accepted copy: every generation's output tokens (all
  draws and repairs: the progress counter's) over accepted rows;
- prompt tokens the prefix cache did not serve, per owed row;
- whether draws of one prompt differ (the CPU engine takes no per-request
  seed): owed rows whose K draws are all the same text, and an example.

Prints one JSON line per arm and a Markdown table with ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ARMS = {
    "baseline": (1, True),
    "K2": (2, True),
    "K4": (4, True),
    "K2-norepair": (2, False),
    "K4-norepair": (4, False),
}


def part(arm: str, limit: int) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from factory import columns as C
    from factory.config import build_config
    from factory.pipeline import driver, passes, run
    from factory.progress import ProgressLog
    from factory.storage import list_files

    k, repair = ARMS[arm]
    config = build_config(
        {},
        {
            "output": tempfile.mkdtemp(prefix=f"bench-cand-{arm}-"),
            "limit": limit,
            "candidates": k,
            "quality.repair": repair,
            "progress_every_seconds": 30.0,
            "engine.device": "cpu",
            "run_date": "2026-12-04",
        },
    )
    # Seconds of each pass: run_passes names the pass (progress.phase), then its writer call runs it.
    named: dict[str, float] = {}
    current, real_phase, real_write = ["?"], ProgressLog.phase, passes.write

    def phase(self, name):
        current[0] = name
        return real_phase(self, name)

    def timed_write(*args, **kwargs):
        start = time.time()
        try:
            return real_write(*args, **kwargs)
        finally:
            named[current[0]] = named.get(current[0], 0.0) + time.time() - start

    ProgressLog.phase, passes.write = phase, timed_write
    # The draws, read before the run deletes its work folder.
    draws, real_delete = [], driver.delete_dir_if_exists

    def keep_draws(loc):
        folder = loc.join("candidates")
        for info in list_files(folder, ".parquet"):
            draws.append(
                pq.read_table(
                    folder.join(info.base_name).path,
                    filesystem=folder.fs,
                    columns=[C.ROW_ID, "candidate", C.TEXT, C.STATUS],
                )
            )
        return real_delete(loc)

    driver.delete_dir_if_exists = keep_draws

    t0 = time.time()
    result = run(config)
    wall = time.time() - t0
    summary = json.loads(Path(result.output_uri, "summary.json").read_text())
    rows = pa.concat_tables([pq.read_table(Path(result.output_uri, f["path"])) for f in result.files])
    n = rows.num_rows
    accepted = pc.equal(rows[C.STATUS], C.ACCEPTED)
    first_pass = int(pc.sum(pc.and_(accepted, pc.equal(rows[C.DRAFT], 1)).cast(pa.int64())).as_py() or 0)
    final = int(pc.sum(accepted.cast(pa.int64())).as_py() or 0)
    engine_s = sum(s for name, s in named.items() if name in ("candidates", "first drafts", "repair"))
    output_tokens = summary["progress"][-1]["output_tokens"] if summary.get("progress") else None
    cand = summary["engine_work"].get("candidates")
    work = summary["engine_work"]
    same = example = None
    if draws:
        table = pa.concat_tables(draws).to_pylist()
        by_row: dict[str, list] = {}
        for r in table:
            by_row.setdefault(r[C.ROW_ID], []).append(r)
        groups = [sorted(g, key=lambda r: r["candidate"]) for g in by_row.values() if len(g) > 1]
        same = sum(len({r[C.TEXT] for r in g}) == 1 for g in groups) / max(1, len(groups))
        example = next(([r[C.TEXT] for r in g] for g in groups if len({r[C.TEXT] for r in g}) > 1), None)
    # Prompt compute: first-draft (or draw) prompt tokens the cache did not serve, plus the repair pass's.
    repaired = rows.filter(pc.equal(rows[C.DRAFT], 2))
    repair_prompt = int(pc.sum(repaired[C.NUM_INPUT_TOKENS]).as_py() or 0)
    repair_cached = int(pc.sum(pc.fill_null(repaired[C.NUM_CACHED_TOKENS], 0)).as_py() or 0)
    if cand:
        first_prompt, first_cached = cand["prompt_tokens"], cand["cached_prompt_tokens"]
    else:
        first = rows.filter(pc.and_(pc.equal(rows[C.DRAFT], 1), pc.is_null(rows[C.DEDUP_OF])))
        first_prompt = int(pc.sum(first[C.NUM_INPUT_TOKENS]).as_py() or 0)
        first_cached = int(pc.sum(pc.fill_null(first[C.NUM_CACHED_TOKENS], 0)).as_py() or 0)
    uncached = first_prompt - first_cached + repair_prompt - repair_cached
    return {
        "part": arm,
        "candidates": k,
        "repair": repair,
        "owed_rows": n,
        "wall_s": round(wall, 1),
        "pass_seconds": {name: round(s, 1) for name, s in named.items()},
        "engine_s": round(engine_s, 1),
        "first_pass_acceptance": round(first_pass / n, 4),
        "final_acceptance": round(final / n, 4),
        "accepted": final,
        "repaired_rows": repaired.num_rows,
        "accepted_per_engine_s": round(final / engine_s, 4),
        "accepted_per_wall_s": round(final / wall, 4),
        "output_tokens": output_tokens,
        "output_tokens_per_accepted": round(output_tokens / max(1, final), 1),
        "prompt_tokens_uncached_per_row": round(uncached / n, 1),
        "draw_prompt_cached_share": round(first_cached / first_prompt, 4) if first_prompt else None,
        "candidates_summary": cand,
        "prefix_cache_hit_rate_kept_rows": work["prefix_cache_hit_rate"],
        "draws_all_identical_share": None if same is None else round(same, 4),
        "differing_draws_example": example,
        "status": summary["quality"]["status"],
    }


def _child(arm: str, limit: int) -> dict:
    cmd = [sys.executable, __file__, "--part", arm, "--limit", str(limit)]
    print(f"# {time.strftime('%H:%M:%S')} running {arm}", flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"part"')]
    if done.returncode or not lines:
        raise SystemExit(f"{arm} failed with exit code {done.returncode}")
    print(lines[-1], flush=True)
    return json.loads(lines[-1])


def report(runs: list[dict]) -> str:
    base = next(r for r in runs if r["part"] == "baseline")
    cols = [
        ("first_pass_acceptance", "first-pass acceptance"),
        ("final_acceptance", "final acceptance"),
        ("accepted_per_engine_s", "accepted / engine-s"),
        ("accepted_per_wall_s", "accepted / run-s"),
        ("output_tokens_per_accepted", "output tok / accepted"),
        ("prompt_tokens_uncached_per_row", "uncached prompt tok / row"),
    ]
    lines = [
        "| arm | rows | engine s | " + " | ".join(label for _, label in cols) + " | draws all identical |",
        "|" + "---|" * (len(cols) + 4),
    ]
    for r in runs:
        cells = []
        for key, _ in cols:
            v, b = r[key], base[key]
            cells.append(f"{v} ({v / b:.2f}x)" if b else f"{v}")
        same = r["draws_all_identical_share"]
        lines.append(
            f"| {r['part']} | {r['owed_rows']} | {r['engine_s']} | "
            + " | ".join(cells)
            + f" | {'-' if same is None else same} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=40, help="bundled sample pairs to run (their first N)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each arm (interleaved); medians reported"
    )
    parser.add_argument("--smoke", action="store_true", help="4 pairs, baseline and K2: does it still run?")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--part", choices=list(ARMS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(part(args.part, args.limit)), flush=True)
        return
    limit, arms = (4, ["baseline", "K2"]) if args.smoke else (args.limit, args.arms.split(","))
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {os.cpu_count()} cores, load {os.getloadavg()}", flush=True
    )
    runs = [_child(arm, limit) for _ in range(args.repeat) for arm in arms]
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2, ensure_ascii=False) + "\n")
    medians = []
    for arm in arms:
        mine = [r for r in runs if r["part"] == arm]
        medians.append(
            {
                **mine[0],
                **{
                    key: sorted(r[key] for r in mine)[len(mine) // 2]
                    for key in (
                        "first_pass_acceptance",
                        "final_acceptance",
                        "accepted_per_engine_s",
                        "accepted_per_wall_s",
                        "output_tokens_per_accepted",
                        "prompt_tokens_uncached_per_row",
                        "engine_s",
                    )
                },
            }
        )
    print(report(medians))


if __name__ == "__main__":  # vLLM spawns an engine process: this guard is required
    main()
