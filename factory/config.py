"""The one job configuration, validated on the driver before any engine time.

Defaults run the demo: bundled sample data, bundled model, ``./out``. A YAML
file may set any field (``engine:`` nested); command-line flags win over it.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from factory.model import BUNDLED_MODEL
from factory.quality.policy import QualityPolicy

DEFAULT_CHANNELS = ("push", "email_subject", "ad_headline", "sms", "product_blurb")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineConfig(_Strict):
    """How the model is served. Anything vLLM accepts goes in ``engine_kwargs``."""

    replicas: int = Field(default=1, ge=1, description="Engine replicas (data parallel); one per GPU group.")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per replica (vLLM tensor parallelism).")
    batch_size: int = Field(default=32, ge=1, description="Rows per batch sent to an engine replica.")
    max_concurrent_batches: int = Field(
        default=4, ge=1,
        description="Batches in flight per replica, so continuous batching always has work queued.",
    )
    max_tokens: Optional[int] = Field(
        default=None, ge=1, le=4096,
        description="Cap on generated tokens; by default each channel's template sets its own.",
    )
    temperature: float = Field(default=0.3, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    seed: int = Field(default=0, description="Engine-level sampling seed (per-request seeds break the CPU engine).")
    max_model_len: int = Field(default=2048, ge=256, description="Context length the engine reserves per sequence.")
    device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto",
        description="auto = GPU when the cluster reports GPUs, else CPU. "
        "Say gpu for an autoscaling cluster whose GPU nodes are still at zero.",
    )
    enforce_eager: Optional[bool] = Field(
        default=None,
        description="Skip torch.compile/CUDA graphs. Default: on for the CPU (engine ready in ~30 s "
        "instead of ~100 s; break-even near 7,000 rows), off on GPUs.",
    )
    cpu_kvcache_gib: int = Field(default=4, ge=1, description="KV cache size on the CPU (VLLM_CPU_KVCACHE_SPACE).")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Passed straight to vLLM's engine; wins over the fields above."
    )


class JobConfig(_Strict):
    """Everything one nightly run needs to know."""

    pairs: Optional[str] = Field(default=None, description="User-product pairs: Parquet file or folder, local or s3://. Default: bundled sample data.")
    users: Optional[str] = Field(default=None, description="User profiles (Parquet). Default: bundled sample data.")
    products: Optional[str] = Field(default=None, description="Product catalog (Parquet). Default: bundled sample data.")
    output: str = Field(default="./out", description="Local folder or s3://bucket/prefix for the results.")
    run_date: dt.date = Field(default_factory=dt.date.today, description="The date the run is for (partition key).")
    campaign: Optional[str] = Field(
        default=None,
        description="Only pairs of this campaign (when pairs carry campaign_id); also labels the run. "
        "Default: every pair, each under its own campaign_id.",
    )
    channels: list[str] = Field(default_factory=lambda: list(DEFAULT_CHANNELS), description="Channels to write.")
    variants: int = Field(default=1, ge=1, le=10, description="Copies per (pair, channel).")
    limit: Optional[int] = Field(default=None, ge=1, description="Use only the first N pairs (smoke runs).")
    model: str = Field(default=BUNDLED_MODEL, description="Local folder, s3:// folder or hub id of the model.")
    templates: Optional[str] = Field(default=None, description="Folder of prompt templates. Default: the packaged ones.")
    s3_endpoint: Optional[str] = Field(default=None, description="S3-compatible endpoint URL (MinIO, R2, a test server).")
    s3_region: str = Field(default="us-east-1", description="Region for S3 requests.")
    s3_sse: Optional[Literal["AES256", "aws:kms"]] = Field(
        default=None, description="Server-side encryption for every object the job writes.")
    s3_sse_kms_key_id: Optional[str] = Field(
        default=None, description="KMS key id or ARN for s3_sse=aws:kms (default: the bucket's AWS managed key).")
    s3_max_attempts: int = Field(
        default=10, ge=1, le=50,
        description="Tries per S3 request (throttling, 5xx and dropped connections are retried with backoff).")
    rows_per_file: int = Field(
        default=50_000, ge=1, le=1_000_000,
        description="Rows per output file. Files are the resume unit: after a crash only rows in "
        "unfinished files are generated again.")
    force: bool = Field(
        default=False, description="Run again as a new attempt even if the run is already published.")
    cpu_stage_num_cpus: float = Field(
        default=0.25, gt=0, le=8,
        description="CPUs reserved per light CPU task (join, render, finalize). Small so they fit "
        "beside the engine on a small node.",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    quality: QualityPolicy = Field(
        default_factory=QualityPolicy,
        description="The quality gate: per-channel limits, extra banned/risky/allowed terms, "
        "per-rule severity, repair on or off.",
    )

    @field_validator("channels", mode="before")
    @classmethod
    def _split_channels(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [c.strip() for c in value.split(",") if c.strip()]
        return value

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one channel is needed")
        return list(dict.fromkeys(value))  # de-duplicated, order kept

    @field_validator("campaign")
    @classmethod
    def _campaign_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _NAME_RE.match(value):
            raise ValueError(f"{value!r}: use letters, digits, '_', '-' or '.' (at most 64)")
        return value

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        if value.startswith("s3://") and len(value[5:].split("/")[0]) < 3:
            raise ValueError(f"{value!r}: S3 bucket names have at least 3 characters")
        return value.rstrip("/") or value

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> "JobConfig":
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("s3_sse_kms_key_id needs s3_sse: aws:kms")
        return self

    @model_validator(mode="after")
    def _inputs_together(self) -> "JobConfig":
        given = [n for n in ("pairs", "users", "products") if getattr(self, n)]
        if given and len(given) != 3:
            missing = sorted({"pairs", "users", "products"} - set(given))
            raise ValueError(f"--pairs, --users and --products go together; missing: {', '.join(missing)}")
        return self

    @property
    def uses_sample_data(self) -> bool:
        return self.pairs is None

    @property
    def campaign_label(self) -> str:
        return self.campaign or "all"

    @property
    def run_id(self) -> str:
        return f"{self.run_date.isoformat()}_{self.campaign_label}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file is a mapping of settings")
    return data


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> JobConfig:
    """Merge a config file's values with flags (flags win; unset flags are None)."""
    merged = dict(file_values)
    engine = dict(merged.pop("engine", None) or {})
    quality = dict(merged.pop("quality", None) or {})
    for key, value in flag_values.items():
        if value is None:
            continue
        if key.startswith("quality."):
            quality[key.split(".", 1)[1]] = value
        elif key.startswith("engine."):
            sub = key.split(".", 1)[1]
            if sub == "engine_kwargs":
                engine["engine_kwargs"] = {**engine.get("engine_kwargs", {}), **value}
            else:
                engine[sub] = value
        else:
            merged[key] = value
    merged["engine"] = engine
    merged["quality"] = quality
    return JobConfig.model_validate(merged)
