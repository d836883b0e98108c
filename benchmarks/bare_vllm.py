"""Bare vLLM on the factory's own rendered prompts: the engine's ceiling here.

    .venv/bin/python benchmarks/bare_vllm.py --rows 200
    VLLM_CPU_NUM_OF_RESERVED_CPU=0 .venv/bin/python benchmarks/bare_vllm.py --rows 200

Renders the sample data's prompts with the pipeline's own stages (no Ray),
then times one ``LLM.generate`` call over them with the pipeline's sampling
settings. Prints one JSON line: engine start-up, rows/s and tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import pyarrow.parquet as pq

from factory import columns as C
from factory import sample_data
from factory.config import EngineConfig
from factory.model import ensure_bundled_model
from factory.prompts import load_templates
from factory.stages.join import JoinProfiles
from factory.stages.render import RenderPrompts


def rendered_rows(n: int):
    paths = sample_data.generate(tempfile.mkdtemp(prefix="bench-sample-"))
    templates = load_templates()
    join = JoinProfiles(
        pq.read_table(paths.users), pq.read_table(paths.products), list(templates), list(templates), 1, None
    )
    return RenderPrompts(templates)(join(pq.read_table(paths.pairs))).slice(0, n)


def main(args: argparse.Namespace) -> None:
    from vllm import LLM, SamplingParams

    rows = rendered_rows(args.rows)
    engine = EngineConfig()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine.cpu_kvcache_gib))
    t0 = time.time()
    llm = LLM(
        model=str(ensure_bundled_model()),
        enforce_eager=not args.compile,
        dtype="bfloat16",
        max_model_len=engine.max_model_len,
        enable_prefix_caching=True,
        seed=engine.seed,
    )
    t1 = time.time()
    tok = llm.get_tokenizer()
    prompts = [
        tok.apply_chat_template(json.loads(m), tokenize=False, add_generation_prompt=True)
        for m in rows[C.MESSAGES].to_pylist()
    ]
    params = [
        SamplingParams(max_tokens=int(m), temperature=engine.temperature, top_p=engine.top_p)
        for m in rows[C.MAX_TOKENS].to_pylist()
    ]
    outs = llm.generate(prompts, params, use_tqdm=False)
    t2 = time.time()
    n_in = sum(len(o.prompt_token_ids) for o in outs)
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    print(
        json.dumps(
            {
                "rows": len(outs),
                "compile": args.compile,
                "env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_CPU")},
                "startup_s": round(t1 - t0, 1),
                "generate_s": round(t2 - t1, 1),
                "rows_per_s": round(len(outs) / (t2 - t1), 2),
                "mean_prompt_tokens": round(n_in / len(outs), 1),
                "output_tokens_per_s": round(n_out / (t2 - t1), 1),
            }
        )
    )
    for row, out in list(zip(rows.to_pylist(), outs))[: args.show]:
        print(f"[{row[C.CHANNEL]}, {row[C.LOCALE]}] {out.outputs[0].text!r}")


if __name__ == "__main__":  # vLLM spawns an engine process
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--compile", action="store_true", help="torch.compile instead of eager mode")
    parser.add_argument("--show", type=int, default=0, help="print this many generated copies")
    main(parser.parse_args())
