"""Command-line flags for the nightly job, made from JobConfig's fields (factory/flags.py)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import ValidationError

from factory.config import EngineConfig, JobConfig, build_config
from factory.errors import JobParser, UsageError, flag_names, load_yaml_lines, settings_lines
from factory.flags import FlagSet, date

# How JobConfig's settings show as flags; every other field is a flag named after it.
NIGHTLY_FLAGS = FlagSet(
    model=JobConfig,
    names={
        "user_ids": "--only-users",
        "product_ids": "--only-products",
        "dedup_prompts": "--dedup",
        "quality.repair": "--repair",
    },
    # Lists of structured entries: a config or campaign file's business.
    file_only=frozenset({"offers", "competitors", "experiment"}),
    inline={"engine": None, "quality": ("repair",)},
    # Several campaigns in one invocation: one run each (parse_job). --run-date keeps
    # its own parse: its message is argparse's (tests/cpu/test_job_errors.py pins it).
    extra={"campaign": {"action": "append"}, "run_date": {"type": date}},
    groups={
        "inputs and output": (
            "pairs",
            "users",
            "products",
            "facts",
            "output",
            "s3_endpoint",
            "s3_region",
            "s3_sse",
            "s3_sse_kms_key_id",
            "s3_max_attempts",
        ),
        "what to write": (
            "run_date",
            "campaign",
            "run_label",
            "user_ids",
            "product_ids",
            "locales",
            "brand_voice",
            "channels",
            "variants",
            "candidates",
            "feedback",
            "limit",
            "templates",
            "rows_per_file",
            "force",
            "dedup_prompts",
        ),
        "dry run: plan and estimate, no engine time": (
            "dry_run",
            "gpu_hour_price",
            "estimate_output_tokens_per_gpu_second",
        ),
        "quality gate (more in the config file's quality: section)": (
            "quality.repair",
            "judge",
            "judge_model",
            "judge_sample",
        ),
        "engine": ("model", *(f"engine.{n}" for n in EngineConfig.model_fields)),
    },
    other="running",
)


def build_parser() -> argparse.ArgumentParser:
    p = JobParser(
        prog="nightly_copy",
        description="Write personalized marketing copy for user-product pairs with vLLM on Ray Data. "
        "With no flags: bundled sample data, bundled model, output in ./out. "
        "Every setting is described in docs/settings.md.",
    )
    p.add_argument("--config", help="YAML file with any of the settings below (flags win).")
    p.add_argument(
        "--campaigns-dir",
        dest="campaigns_dir",
        help="Folder of campaign configs (one <campaign_id>.yaml each): runs every campaign "
        "active on the run date, or those named with --campaign (repeat it, or a comma list).",
    )
    p.add_argument("--json", action="store_true", help="With --dry-run: print the plan as JSON.")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="Show Ray's and vLLM's own log lines on the console too (the log file always has them).",
    )
    NIGHTLY_FLAGS.add_to(p)
    return p


@dataclass
class JobRequest:
    """What one invocation asks for: one run per config, in order."""

    configs: list[JobConfig]
    campaign_files: list[Optional[str]]  # the campaign config behind each run, if any
    dry_run: bool
    json: bool
    verbose: bool = False  # Ray's and vLLM's own lines on the console too


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
    verbose = args.pop("verbose")
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
            configs = [build_config(file_values, {**args, "campaign": n}) for n in names] or [
                build_config(file_values, args)
            ]
            paths = [None] * len(configs)
    except ValidationError as exc:
        raise UsageError(*settings_lines(exc, JobConfig, given, files)) from None
    if not campaigns_dir and len(configs) > 1 and configs[0].run_label:
        from factory.campaigns import CampaignError

        raise CampaignError(
            [f"--run-label {configs[0].run_label}: one label cannot name {len(configs)} runs"]
        )
    dry_run = any(c.dry_run for c in configs)
    return JobRequest(
        configs=configs, campaign_files=paths, dry_run=dry_run, json=bool(as_json), verbose=bool(verbose)
    )


def parse_config(argv: Optional[Sequence[str]] = None) -> JobConfig:
    """The config of a single run (no campaigns folder, at most one campaign)."""
    request = parse_job(argv)
    if len(request.configs) != 1:
        raise ValueError(f"{len(request.configs)} runs requested; parse_job() handles several")
    return request.configs[0]
