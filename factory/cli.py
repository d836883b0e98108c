"""Command-line flags for the nightly job; every flag mirrors a config field."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from pydantic import ValidationError

from factory.config import DEFAULT_CHANNELS, JobConfig, build_config
from factory.errors import JobParser, UsageError, flag_names, load_yaml_lines, settings_lines


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"max_num_seqs\": 64}'")
    return value


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (expected YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    p = JobParser(
        prog="nightly_copy",
        description="Write personalized marketing copy for user-product pairs with vLLM on Ray Data. "
        "With no flags: bundled sample data, bundled model, output in ./out.",
    )
    p.add_argument("--config", help="YAML file with any of the settings below (flags win).")
    io = p.add_argument_group("inputs and output")
    io.add_argument("--pairs", help="Pairs Parquet file or folder (local or s3://).")
    io.add_argument("--users", help="User profiles Parquet (local or s3://).")
    io.add_argument("--products", help="Product catalog Parquet (local or s3://).")
    io.add_argument("--facts", help="Product-facts table (folder or s3://): extract facts for changed "
                    "products, reuse the rest, and write from them (see jobs/extract_facts.py).")
    io.add_argument("--output", help="Output folder or s3://bucket/prefix (default ./out).")
    io.add_argument("--s3-endpoint", dest="s3_endpoint", help="S3-compatible endpoint URL (MinIO, R2, ...).")
    io.add_argument("--s3-region", dest="s3_region", help="S3 region (default us-east-1).")
    io.add_argument("--s3-sse", dest="s3_sse", choices=["AES256", "aws:kms"],
                    help="Server-side encryption for every object written.")
    io.add_argument("--s3-sse-kms-key-id", dest="s3_sse_kms_key_id", help="KMS key for --s3-sse aws:kms.")
    io.add_argument("--s3-max-attempts", dest="s3_max_attempts", type=int,
                    help="Tries per S3 request before the run fails (default 10, with backoff).")
    run = p.add_argument_group("what to write")
    run.add_argument("--run-date", dest="run_date", type=_date, help="YYYY-MM-DD (default today).")
    run.add_argument("--campaign", action="append",
                     help="Only this campaign's pairs; labels the run. Repeat it or give a comma list to run "
                     "several campaigns one after another (with --campaigns-dir: pick these from the folder).")
    run.add_argument("--campaigns-dir", dest="campaigns_dir",
                     help="Folder of campaign configs (one <campaign_id>.yaml each): runs every campaign active "
                     "on the run date, or the ones named with --campaign.")
    run.add_argument("--run-label", dest="run_label",
                     help="Name the run (partition, run id, latest pointer) instead of the campaign, e.g. a backfill.")
    run.add_argument("--only-users", dest="user_ids",
                     help="Only pairs of these users: comma list, or @file with one id per line.")
    run.add_argument("--only-products", dest="product_ids",
                     help="Only pairs of these products: comma list, or @file with one id per line.")
    run.add_argument("--locales", help="Only users with these locales, comma list (en-US, zh-CN, or en for all en-*).")
    run.add_argument("--brand-voice", dest="brand_voice", help="Tone / brand voice added to every system prompt.")
    run.add_argument("--channels", help=f"Comma list (default {','.join(DEFAULT_CHANNELS)}).")
    run.add_argument("--variants", type=int, help="Copies per (pair, channel) (default 1).")
    run.add_argument("--limit", type=int, help="Use only the first N pairs.")
    run.add_argument("--templates", help="Folder of prompt templates (default: the packaged ones).")
    run.add_argument("--rows-per-file", dest="rows_per_file", type=int,
                     help="Rows per output file, the resume unit (default 50000).")
    run.add_argument("--feedback", help="The feedback table (jobs/ingest_feedback.py's --output, local or s3://): "
                     "a campaign's experiment allocates its arms from it.")
    run.add_argument("--force", action="store_true", default=None,
                     help="Run again as a new attempt even if this run date and campaign are published.")
    run.add_argument("--dedup", dest="dedup_prompts", action=argparse.BooleanOptionalAction, default=None,
                     help="Generate identical prompts once and reuse the copy (default on).")
    plan = p.add_argument_group("dry run: plan and estimate, no engine time")
    plan.add_argument("--dry-run", dest="dry_run", action="store_true", default=None,
                      help="Validate config and inputs, count rows per campaign and channel, estimate tokens, "
                      "GPU-hours and cost; start no engine, write nothing.")
    plan.add_argument("--json", action="store_true", help="With --dry-run: print the plan as JSON.")
    plan.add_argument("--gpu-hour-price", dest="gpu_hour_price", type=float, help="USD per GPU-hour (default 4.0).")
    plan.add_argument("--estimate-output-tokens-per-gpu-second", dest="estimate_output_tokens_per_gpu_second",
                      type=float, help="Assumed output tokens per second of one GPU (default 5777, an H100 "
                      "running an 8B model; see README).")
    gate = p.add_argument_group("quality gate (more in the config file's quality: section)")
    gate.add_argument("--repair", dest="quality.repair", action=argparse.BooleanOptionalAction, default=None,
                      help="Regenerate rejected rows once with the reasons fed back (default on).")
    gate.add_argument("--judge", action=argparse.BooleanOptionalAction, default=None,
                      help="Also ask a model which claims the facts do not support and whether the copy fits the "
                      "product and the customer (default off).")
    gate.add_argument("--judge-model", dest="judge_model", help="The judge's model (default: the run's --model).")
    gate.add_argument("--judge-sample", dest="judge_sample", type=float,
                      help="Share of the rows the gate let through that the judge reads, 0-1 (default 1).")
    eng = p.add_argument_group("engine")
    eng.add_argument("--model", help="Local folder, s3:// folder or hub id (default: bundled SmolLM2-135M-Instruct).")
    eng.add_argument("--replicas", dest="engine.replicas", type=int, help="Engine replicas (default 1).")
    eng.add_argument("--tensor-parallel-size", dest="engine.tensor_parallel_size", type=int)
    eng.add_argument("--batch-size", dest="engine.batch_size", type=int, help="Rows per engine batch (default 32).")
    eng.add_argument("--max-concurrent-batches", dest="engine.max_concurrent_batches", type=int)
    eng.add_argument("--max-tokens", dest="engine.max_tokens", type=int, help="Override every channel's token cap.")
    eng.add_argument("--temperature", dest="engine.temperature", type=float)
    eng.add_argument("--top-p", dest="engine.top_p", type=float)
    eng.add_argument("--seed", dest="engine.seed", type=int)
    eng.add_argument("--max-model-len", dest="engine.max_model_len", type=int)
    eng.add_argument("--device", dest="engine.device", choices=["auto", "cpu", "gpu"])
    eng.add_argument("--enforce-eager", dest="engine.enforce_eager", action=argparse.BooleanOptionalAction,
                     default=None)
    eng.add_argument("--engine-kwargs", dest="engine.engine_kwargs", type=_json_object,
                     help="JSON object passed straight to vLLM, e.g. '{\"max_num_seqs\": 128}'.")
    eng.add_argument("--cpu-stage-actors", dest="cpu_stage_actors", type=int,
                     help="Most actors per CPU stage (default: one per 8 cluster CPUs, at least 2).")
    eng.add_argument("--shared-filesystem", dest="shared_filesystem", action="store_true", default=None,
                     help="Local paths are on a filesystem every cluster node mounts; without it a cluster of "
                     "more than one node needs s3:// paths.")
    eng.add_argument("--ray-dashboard", dest="ray_dashboard", action=argparse.BooleanOptionalAction, default=None,
                     help="Start Ray's dashboard with a local Ray (off by default; a cluster keeps its own).")
    return p


@dataclass
class JobRequest:
    """What one invocation asks for: one run per config, in order."""

    configs: list[JobConfig]
    campaign_files: list[Optional[str]]  # the campaign config behind each run, if any
    dry_run: bool
    json: bool


def _names(args: dict[str, Any], file_values: dict[str, Any]) -> list[str]:
    from factory.campaigns import split_names

    return split_names(args.pop("campaign") or file_values.pop("campaign", None))


def parse_job(argv: Optional[Sequence[str]] = None) -> JobRequest:
    """Flags (and the files they name) to validated configs: every campaign
    file and every config is checked here, before the first run starts. A
    mistake raises UsageError naming the flag, or the file, key and line."""
    from factory.campaigns import campaign_configs

    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config_file, campaigns_dir, as_json = args.pop("config"), args.pop("campaigns_dir"), args.pop("json")
    file_values, file_lines = load_yaml_lines(config_file, "--config file") if config_file else ({}, {})
    given = {dest: flag for dest, flag in flag_names(parser).items() if args.get(dest) is not None}
    files = [(config_file, file_lines)] if config_file else []
    campaigns_dir = campaigns_dir or file_values.pop("campaigns_dir", None)
    names = _names(args, file_values)
    try:
        if campaigns_dir:
            pairs = campaign_configs(file_values, args, campaigns_dir, names, flags=given, files=files)
            configs, paths = [c for _, c in pairs], [str(k.path) for k, _ in pairs]
        else:
            configs = ([build_config(file_values, {**args, "campaign": n}) for n in names]
                       or [build_config(file_values, args)])
            paths = [None] * len(configs)
    except ValidationError as exc:
        raise UsageError(*settings_lines(exc, JobConfig, given, files)) from None
    if not campaigns_dir and len(configs) > 1 and configs[0].run_label:
        from factory.campaigns import CampaignError

        raise CampaignError([f"--run-label {configs[0].run_label}: one label cannot name {len(configs)} runs"])
    dry_run = any(c.dry_run for c in configs)
    return JobRequest(configs=configs, campaign_files=paths, dry_run=dry_run, json=bool(as_json))


def parse_config(argv: Optional[Sequence[str]] = None) -> JobConfig:
    """The config of a single run (no campaigns folder, at most one campaign)."""
    request = parse_job(argv)
    if len(request.configs) != 1:
        raise ValueError(f"{len(request.configs)} runs requested; parse_job() handles several")
    return request.configs[0]
