"""The factory against bare vLLM and against the tutorial per-row loop, side by side.

    .venv/bin/python benchmarks/throughput.py                 # full: 250 and 1,250 rows (about 25 min here)
    .venv/bin/python benchmarks/throughput.py --smoke         # tiny sizes: checks the script still runs

Same input rows, same rendered prompts, same bundled model, same sampling
settings and token caps for every contender. Each part runs in its own
process (fresh engine, fresh Ray) one after another, and prints one JSON line;
the driver prints a Markdown table and the ratios.

- bare:     one ``vllm.LLM.generate`` call over all N2 rendered prompts (the
            prompts the pipeline's own join and render stages make). Engine
            start-up and a first-call warm-up are timed apart; rows/s = N2 /
            generate time. Then one call over the first N1 prompts: the same
            marginal as the pipeline's, over the same rows, so both sides
            compare equal work (the rows after N1 are not the average row).
            The prefix cache is emptied before each call. Run before and again
            after the pipeline parts: on a shared host the machine's speed
            drifts by more than the gap being measured, so the ratios are
            taken against the mean of the two and the drift is printed
            (``--bare-once`` skips the second run).
- pipeline: ``factory.pipeline.run`` on the same pairs (dedup off, repair off:
            the same N2 generations). Engine start-up, Ray start-up, pass 1 and
            publishing are fixed costs, so the steady rate is the marginal one
            between a run of N1 and a run of N2 rows: (N2 - N1) / (T2 - T1).
            (The same method measured Ray Data LLM itself here: ../shared/PLATFORM.md.)
- hf:       ``transformers`` ``model.generate`` one prompt at a time, the loop
            tutorials teach (same model folder, dtype, sampling), on the first
            ``--hf-rows`` prompts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CHANNELS = ("push", "email_subject", "ad_headline", "sms", "product_blurb")


def make_inputs(folder: Path, rows: int) -> dict[str, str]:
    """``rows`` pairs that each name one channel (one pair = one row), over
    the bundled sample users and products, without the hostile rows."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from factory import columns as C
    from factory import sample_data

    paths = sample_data.generate(folder, hostile=False)
    users = pq.read_table(paths.users)[C.USER_ID].to_pylist()
    products = pq.read_table(paths.products)[C.PRODUCT_ID].to_pylist()
    rng = random.Random(11)
    pairs = []
    for i in range(rows):
        pairs.append(
            {
                C.USER_ID: users[i % len(users)],
                C.PRODUCT_ID: rng.choice(products),
                C.CHANNEL: CHANNELS[i % len(CHANNELS)],  # every prefix of the file has the same mix
                C.CAMPAIGN_ID: "bench",
            }
        )
    pairs_path = folder / f"pairs-{rows}.parquet"
    pq.write_table(pa.Table.from_pylist(pairs), pairs_path)
    return {"pairs": str(pairs_path), "users": paths.users, "products": paths.products}


def job_config(inputs: dict[str, str], rows: int, output: str, settings: dict | None = None):
    """The pipeline's config for the first ``rows`` pairs: dedup and repair
    off, so it makes one generation per row, as bare vLLM does."""
    from factory.config import build_config

    return build_config(
        {},
        {
            "pairs": inputs["pairs"],
            "users": inputs["users"],
            "products": inputs["products"],
            "output": output,
            "limit": rows,
            "dedup_prompts": False,
            "quality.repair": False,
            "progress_every_seconds": 30.0,
            "engine.device": "cpu",
            **(settings or {}),
        },
    )


def rendered(inputs: dict[str, str], rows: int):
    """The prompts the pipeline renders for these pairs, in input order: its
    own ``prepare`` (templates, lookups, the catalog's facts on each product),
    join and render stages."""
    import pyarrow.parquet as pq

    from factory.pipeline import prepare, prompt_stages

    join, render = prompt_stages(
        prepare(job_config(inputs, rows, tempfile.mkdtemp(prefix="bench-rendered-")))
    )
    return render(join(pq.read_table(inputs["pairs"]).slice(0, rows)))


def sampling():
    from factory.config import EngineConfig

    e = EngineConfig()
    return e, {"temperature": e.temperature, "top_p": e.top_p}


def _finite(x: float):
    return None if math.isnan(x) else x


def _marginal_seconds(big_s: float, small_s: float) -> float:
    """The time the extra rows of the bigger run took, or NaN when the bigger run
    was not slower: that happens only at smoke sizes, where one long reply or the
    fixed costs decide both timings, and there is then no steady rate to report."""
    return big_s - small_s if big_s > small_s else float("nan")


def part_bare(inputs: dict[str, str], rows: int, small: int) -> dict:
    """One ``LLM.chat`` call over all ``rows`` prompts (the headline figure),
    then one over the first ``small`` of them: the difference is the same
    marginal the pipeline is measured by, over the same rows."""
    from vllm import LLM, SamplingParams

    from factory import columns as C
    from factory.model import ensure_bundled_model
    from factory.stages.generate import engine_kwargs

    table = rendered(inputs, rows)
    engine, params = sampling()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine.cpu_kvcache_gib))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # as the pipeline's engine actor
    t0 = time.time()
    llm = LLM(model=str(ensure_bundled_model()), **engine_kwargs(engine, "cpu"))
    t1 = time.time()
    messages = [json.loads(m) for m in table[C.MESSAGES].to_pylist()]
    sp = [
        SamplingParams(max_tokens=int(m), stop=list(s) or None, **params)
        for m, s in zip(table[C.MAX_TOKENS].to_pylist(), table[C.STOP].to_pylist())
    ]

    def generate(n: int):
        llm.reset_prefix_cache()  # every call starts as cold as a fresh pipeline engine
        started = time.time()
        outs = llm.chat(messages[:n], sp[:n], use_tqdm=False)
        return outs, time.time() - started

    generate(
        min(8, rows)
    )  # first-call warm-up, kept out of both timings (a pipeline run's is in its fixed costs)
    outs, all_s = generate(rows)
    n_small = min(small, rows - 1)
    small_outs, small_s = generate(n_small)
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    n_out_small = sum(len(o.outputs[0].token_ids) for o in small_outs)
    n_in = sum(len(o.prompt_token_ids) for o in outs)
    cached = sum(o.num_cached_tokens or 0 for o in outs)
    marginal_s = _marginal_seconds(all_s, small_s)
    return {
        "part": "bare",
        "rows": len(outs),
        "startup_s": round(t1 - t0, 1),
        "generate_s": round(all_s, 1),
        "rows_per_s": round(len(outs) / all_s, 3),
        "output_tokens": n_out,
        "output_tokens_per_s": round(n_out / all_s, 1),
        "small_rows": n_small,
        "small_generate_s": round(small_s, 1),
        "marginal_rows_per_s": _finite(round((len(outs) - n_small) / marginal_s, 3)),
        "marginal_output_tokens_per_s": _finite(round((n_out - n_out_small) / marginal_s, 1)),
        "mean_prompt_tokens": round(n_in / len(outs), 1),
        "prefix_cache_hit_rate": round(cached / n_in, 4),
    }


def part_pipeline(
    inputs: dict[str, str], rows: int, dedup: bool = False, settings: dict | None = None
) -> dict:
    from factory.pipeline import run

    config = job_config(
        inputs, rows, tempfile.mkdtemp(prefix="bench-out-"), {"dedup_prompts": dedup, **(settings or {})}
    )
    t0 = time.time()
    result = run(config)
    wall = time.time() - t0
    summary = json.loads(Path(result.output_uri, "summary.json").read_text())
    work = summary["engine_work"]
    return {
        "part": "pipeline",
        "rows": result.rows_written,
        "dedup": dedup,
        "wall_s": round(wall, 1),
        "output_tokens": work["output_tokens"],
        "rows_generated": work["rows_generated"],
        "rows_reused": work["rows_reused"],
        "tokens_saved_by_reuse": work["tokens_saved_by_reuse"],
        "prefix_cache_hit_rate": work["prefix_cache_hit_rate"],
        "by_channel": work["by_channel"],
        "first_draft_status": summary["quality"]["status"],  # repair is off: the gate on first drafts
        "progress": summary.get("progress", []),
    }


def part_hf(inputs: dict[str, str], rows: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factory import columns as C
    from factory.model import ensure_bundled_model

    table = rendered(inputs, rows)
    _, params = sampling()
    folder = str(ensure_bundled_model())
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16)
    model.eval()
    t1 = time.time()
    n_out = 0
    torch.manual_seed(0)
    for messages, cap in zip(table[C.MESSAGES].to_pylist(), table[C.MAX_TOKENS].to_pylist()):
        inputs = tok.apply_chat_template(
            json.loads(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=int(cap), do_sample=True, pad_token_id=tok.eos_token_id, **params
            )
        n_out += out.shape[1] - inputs["input_ids"].shape[1]
    t2 = time.time()
    return {
        "part": "hf",
        "rows": rows,
        "startup_s": round(t1 - t0, 1),
        "generate_s": round(t2 - t1, 1),
        "rows_per_s": round(rows / (t2 - t1), 3),
        "output_tokens_per_s": round(n_out / (t2 - t1), 1),
    }


def _child(part: str, inputs_dir: Path, rows: int, total: int, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--inputs",
        str(inputs_dir),
        "--rows",
        str(rows),
        "--total",
        str(total),
        *extra,
    ]
    print(f"# running: {' '.join(cmd[1:])}", flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"part"')]
    if done.returncode or not lines:
        raise SystemExit(f"{part} ({rows} rows) failed with exit code {done.returncode}")
    result = json.loads(lines[-1])
    print(json.dumps({k: v for k, v in result.items() if k != "progress"}), flush=True)
    return result


def _mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def report(bare_runs: list[dict], small: dict, big: dict, hf: dict) -> str:
    steady_s = _marginal_seconds(big["wall_s"], small["wall_s"])
    rows = big["rows"] - small["rows"]
    pipe_rows_s = rows / steady_s
    pipe_tok_s = (big["output_tokens"] - small["output_tokens"]) / steady_s
    # The bare figures the pipeline is compared with: the mean of the runs before and after it.
    one_rows, one_tok = _mean(bare_runs, "rows_per_s"), _mean(bare_runs, "output_tokens_per_s")
    has_marginal = all(r["marginal_rows_per_s"] for r in bare_runs)
    marg_rows = _mean(bare_runs, "marginal_rows_per_s") if has_marginal else float("nan")
    marg_tok = _mean(bare_runs, "marginal_output_tokens_per_s") if has_marginal else float("nan")
    first = bare_runs[0]
    lines = [
        (
            "| contender | rows | start-up s | steady rows/s | steady output tok/s "
            "| vs bare vLLM (rows/s, tok/s) |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, run in zip(("before", "after"), bare_runs):
        lines.append(
            f"| bare vLLM `LLM.chat`, one call over all prompts ({label} the pipeline) | {run['rows']} | "
            f"{run['startup_s']} | {run['rows_per_s']:.2f} | {run['output_tokens_per_s']:.1f} | |"
        )
        if has_marginal:
            lines.append(
                f"| bare vLLM, marginal {run['small_rows']}->{run['rows']} rows ({label}) "
                f"| {run['rows']} | | "
                f"{run['marginal_rows_per_s']:.2f} | {run['marginal_output_tokens_per_s']:.1f} | |"
            )
    lines += [
        f"| factory pipeline, marginal {small['rows']}->{big['rows']} rows | {big['rows']} | "
        f"{big['wall_s'] - steady_s * big['rows'] / rows:.0f} (fixed costs) | "
        f"{pipe_rows_s:.2f} | {pipe_tok_s:.1f} | "
        f"{pipe_rows_s / one_rows:.2f}, {pipe_tok_s / one_tok:.2f} (one call); "
        f"{pipe_rows_s / marg_rows:.2f}, {pipe_tok_s / marg_tok:.2f} (marginal) |",
        f"| HF `model.generate`, one prompt at a time | {hf['rows']} | {hf['startup_s']} | "
        f"{hf['rows_per_s']:.2f} | {hf['output_tokens_per_s']:.1f} | "
        f"{hf['rows_per_s'] / one_rows:.2f}, {hf['output_tokens_per_s'] / one_tok:.2f} |",
        "",
        (
            f"bare vLLM before / after the pipeline: {bare_runs[0]['rows_per_s']:.2f} / "
            f"{bare_runs[-1]['rows_per_s']:.2f} rows/s "
            f"(drift {100 * (bare_runs[-1]['rows_per_s'] / bare_runs[0]['rows_per_s'] - 1):+.1f} %; "
            "more than a few % means the machine's speed moved during the run)"
        )
        if len(bare_runs) > 1
        else "bare vLLM ran once (--bare-once): machine drift is not measured",
        "pipeline / bare vLLM (mean of before and after), target >= 0.90:",
        f"  against one call over all prompts: {pipe_rows_s / one_rows:.2f}x rows/s, "
        f"{pipe_tok_s / one_tok:.2f}x output tokens/s",
        f"  like for like, both marginal over the same rows: {pipe_rows_s / marg_rows:.2f}x rows/s, "
        f"{pipe_tok_s / marg_tok:.2f}x output tokens/s",
        f"pipeline / HF loop: {pipe_rows_s / hf['rows_per_s']:.1f}x rows/s (target >= 8)",
        f"prefix-cache hit rate: bare {first['prefix_cache_hit_rate']}, "
        f"pipeline {big['prefix_cache_hit_rate']}; "
        f"mean prompt tokens: bare {first['mean_prompt_tokens']}",
        "pipeline prompt/output tokens per channel: " + json.dumps(big["by_channel"]),
        "RATIOS "
        + json.dumps(
            {
                "one_call_rows": _finite(round(pipe_rows_s / one_rows, 3)),
                "one_call_tokens": _finite(round(pipe_tok_s / one_tok, 3)),
                "marginal_rows": _finite(round(pipe_rows_s / marg_rows, 3)),
                "marginal_tokens": _finite(round(pipe_tok_s / marg_tok, 3)),
                "hf": _finite(round(pipe_rows_s / hf["rows_per_s"], 2)),
            }
        ),
    ]
    return "\n".join(lines)


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, booleans, lists and objects
    except json.JSONDecodeError:
        return key, value


def main(args: argparse.Namespace) -> None:
    if args.part:
        inputs = json.loads((Path(args.inputs) / "inputs.json").read_text())
        result = {
            "bare": lambda: part_bare(inputs, args.rows, args.small),
            "pipeline": lambda: part_pipeline(inputs, args.rows, settings=dict(args.set)),
            "hf": lambda: part_hf(inputs, args.rows),
        }[args.part]()
        print(json.dumps(result), flush=True)
        return
    n1, n2, n_hf = (8, 16, 2) if args.smoke else (args.small, args.rows, args.hf_rows)
    folder = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    inputs = make_inputs(folder, n2)
    (folder / "inputs.json").write_text(json.dumps(inputs))
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} machine: {os.cpu_count()} cores; inputs in {folder}",
        flush=True,
    )
    bare_args = ["--small", str(n1)]
    bare = _child("bare", folder, n2, n2, bare_args)
    sets = [a for key, value in args.set for a in ("--set", f"{key}={json.dumps(value)}")]
    small = _child("pipeline", folder, n1, n2, sets)
    big = _child("pipeline", folder, n2, n2, sets)
    bare_runs = [bare] if args.bare_once else [bare, _child("bare", folder, n2, n2, bare_args)]
    hf = _child("hf", folder, n_hf, n2, [])
    text = report(bare_runs, small, big, hf)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":  # vLLM spawns an engine process: this guard is required
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1250, help="N2: rows of the large run (and of bare vLLM)")
    parser.add_argument("--small", type=int, default=250, help="N1: rows of the small pipeline run")
    parser.add_argument(
        "--hf-rows", dest="hf_rows", type=int, default=40, help="prompts for the per-row loop"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does the script still run?")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument(
        "--bare-once",
        action="store_true",
        help="run bare vLLM only before the pipeline, not again after it (faster, blind to drift)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=_setting,
        metavar="KEY=VALUE",
        help="a pipeline setting for both pipeline runs, as the job's config keys "
        "(e.g. engine.max_concurrent_batches=16); repeatable",
    )
    parser.add_argument("--part", choices=["bare", "pipeline", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    main(parser.parse_args())
