"""Work avoided by generating identical prompts once (issue 5, benchmark 4).

    .venv/bin/python benchmarks/work_avoided.py                      # counts only, a few seconds
    .venv/bin/python benchmarks/work_avoided.py --run --users 200    # plus the real job, dedup on and off

Many shops send a campaign to segments: users of one segment share every
profile field a template shows (interests, recent views, tier, locale), so
their rows render the same prompt. This builds such data from the bundled
sample (``--segments`` profiles, each cloned to ``--users / --segments`` user
ids, every user paired with ``--products`` products of the catalog, all five
channels), then reports:

- the share of rows whose prompt is identical to an earlier row's (counted
  with the pipeline's own key, and checked against the rendered prompts),
- the prompt tokens saved (the model's tokenizer on the rendered chats),
- with ``--run``: the nightly job on the same data with dedup on and off, wall
  time, rows generated and tokens saved as its summary reports them.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def make_inputs(folder: Path, users: int, segments: int, products: int) -> dict[str, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from factory import columns as C
    from factory import sample_data

    paths = sample_data.generate(folder, hostile=False)
    base = pq.read_table(paths.users).slice(0, segments).to_pylist()
    catalog = pq.read_table(paths.products)[C.PRODUCT_ID].to_pylist()
    rng = random.Random(5)
    people, pairs = [], []
    segment_products = [rng.sample(catalog, products) for _ in range(segments)]
    for i in range(users):
        s = i % segments
        people.append({**base[s], C.USER_ID: f"S{s:02d}-U{i:06d}"})
        for p in segment_products[s]:  # a campaign sends a segment the same products
            pairs.append({C.USER_ID: people[-1][C.USER_ID], C.PRODUCT_ID: p, C.CAMPAIGN_ID: "segments"})
    users_path, pairs_path = folder / "segment_users.parquet", folder / "segment_pairs.parquet"
    pq.write_table(pa.Table.from_pylist(people, schema=pq.read_schema(paths.users)), users_path)
    pq.write_table(pa.Table.from_pylist(pairs), pairs_path)
    return {"pairs": str(pairs_path), "users": str(users_path), "products": paths.products}


def count(inputs: dict[str, str]) -> dict:
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from factory import columns as C
    from factory import dedup
    from factory.config import build_config
    from factory.model import ensure_bundled_model
    from factory.pipeline import prepare, prompt_stages
    from factory.pipeline.plan import users_on_driver

    # The job's own prepare and stages: its templates and lookup tables, with
    # the catalog's facts on each product, as the prompts the engine would get.
    plan = prepare(
        build_config(
            {},
            {
                "pairs": inputs["pairs"],
                "users": inputs["users"],
                "products": inputs["products"],
                "output": tempfile.mkdtemp(prefix="bench-dedup-plan-"),
            },
        )
    )
    join, render = prompt_stages(plan)
    joined = join(pq.read_table(inputs["pairs"]))
    rendered = render(joined)
    keys = dedup.prompt_keys(joined, users_on_driver(plan), plan.templates)
    lead = dedup.leaders(joined[C.ROW_ID].to_pylist(), keys)
    keys = keys.to_pylist()
    prompts = rendered[C.MESSAGES].to_pylist()
    # The key must never join rows whose prompts differ.
    first = {}
    for key, prompt in zip(keys, prompts):
        assert first.setdefault(key, prompt) == prompt, "a dedup key joined two different prompts"
    tok = AutoTokenizer.from_pretrained(str(ensure_bundled_model()))
    tokens = [
        len(
            tok.apply_chat_template(
                json.loads(p), add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        for p in prompts
    ]
    followers = [i for i, x in enumerate(lead) if x is not None]
    caps = rendered[C.MAX_TOKENS].to_pylist()
    return {
        "rows": len(keys),
        "distinct_prompts": len(set(keys)),
        "identical_share": round(len(followers) / len(keys), 4),
        "prompt_tokens": sum(tokens),
        "prompt_tokens_saved": sum(tokens[i] for i in followers),
        "output_token_cap_saved": sum(caps[i] for i in followers),
        "rows_per_channel": dict(Counter(joined[C.CHANNEL].to_pylist())),
    }


def run_job(inputs: dict[str, str], dedup_on: bool) -> dict:
    out = tempfile.mkdtemp(prefix="bench-dedup-")
    cmd = [
        sys.executable,
        str(HERE.parent / "jobs" / "nightly_copy.py"),
        "--pairs",
        inputs["pairs"],
        "--users",
        inputs["users"],
        "--products",
        inputs["products"],
        "--output",
        out,
        "--no-repair",
        "--run-date",
        "2026-01-01",
        "--dedup" if dedup_on else "--no-dedup",
    ]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    summary = json.loads(next(Path(out).glob("runs/*/*/attempt=*/summary.json")).read_text())
    work = summary["engine_work"]
    return {
        "dedup": dedup_on,
        "wall_s": round(wall, 1),
        "rows": summary["rows_written"],
        "rows_generated": work["rows_generated"],
        "rows_reused": work["rows_reused"],
        "tokens_saved_by_reuse": work["tokens_saved_by_reuse"],
        "output_tokens": work["output_tokens"],
        "prefix_cache_hit_rate": work["prefix_cache_hit_rate"],
    }


def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-segments-"))
    inputs = make_inputs(folder, args.users, args.segments, args.products)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')}: {args.users} users in {args.segments} segments, "
        f"{args.products} products each, 5 channels; inputs in {folder}",
        flush=True,
    )
    counts = count(inputs)
    print(json.dumps(counts), flush=True)
    if args.run:
        on, off = run_job(inputs, True), run_job(inputs, False)
        print(json.dumps(on), flush=True)
        print(json.dumps(off), flush=True)
        print(
            f"wall time with dedup / without: {on['wall_s'] / off['wall_s']:.2f}; "
            f"engine rows {on['rows_generated']} vs {off['rows_generated']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--products", type=int, default=3, help="products per segment")
    parser.add_argument("--run", action="store_true", help="also run the nightly job with dedup on and off")
    main(parser.parse_args())
