"""The one job configuration, validated on the driver before any engine time.

Defaults run the demo: bundled sample data, bundled model, ``./out``. A YAML
file may set any field (``engine:`` nested); command-line flags win over it.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from factory.errors import load_yaml_lines
from factory.model import BUNDLED_MODEL
from factory.quality.policy import Offer, QualityPolicy

DEFAULT_CHANNELS = ("push", "email_subject", "ad_headline", "sms", "product_blurb")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = "use letters, digits, '_', '-' or '.' (at most 64, starting with a letter or digit)"
# A locale is a language subtag, optionally with region/script subtags: en, en-US, zh-CN, zh_Hans_CN.
_LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
BRAND_VOICE_MAX_CHARS = 200
# A campaign states a handful of offers; each is a line of the system prompt.
MAX_OFFERS = 5
MAX_COMPETITORS = 500


def clean_competitors(value: Optional[list[str]]) -> Optional[list[str]]:
    """Names trimmed, blanks and repeats dropped; a one-letter name would match everywhere."""
    if value is None:
        return value
    names = list(dict.fromkeys(" ".join(str(v).split()) for v in value if str(v).strip()))
    short = [n for n in names if len(n) < 2]
    if short:
        raise ValueError(f"competitor names need 2+ characters: {', '.join(map(repr, short))}")
    return names


# Public throughput figure the dry-run's GPU-hour estimate assumes (see the field's description).
H100_8B_OUTPUT_TOKENS_PER_SECOND = 5777.0


def check_name(value: str) -> str:
    """A campaign or run label: it becomes a path segment and part of the run id."""
    if not _NAME_RE.match(value):
        raise ValueError(f"{value!r}: {NAME_RULE}")
    return value


def normalize_locale(locale: Optional[str]) -> str:
    """``en_us`` -> ``en-us``: how locales are compared (case and separator do not matter)."""
    return (locale or "").strip().replace("_", "-").lower()


def check_locale(value: str) -> str:
    """A locale the prompt templates can write in (their ``{language}`` knows its language)."""
    from factory.prompts import LANGUAGES

    if not isinstance(value, str) or not _LOCALE_RE.match(value.strip()):
        raise ValueError(f"{value!r} is not a locale (expected e.g. en-US, en-GB, zh-CN or just en)")
    language = normalize_locale(value).split("-")[0]
    if language not in LANGUAGES:
        raise ValueError(
            f"{value!r}: the templates cannot write language {language!r} "
            f"(supported: {', '.join(sorted(LANGUAGES))})"
        )
    return value.strip()


# One error per bad entry (locales.0, locales.2, ...), not just the first.
Locale = Annotated[str, AfterValidator(check_locale)]


def locale_allowed(locale: Optional[str], allowed: Optional[list[str]]) -> bool:
    """Whether a user's locale is in a run's list. ``None`` allows every locale; an entry
    with a region (``en-US``) matches that locale only, a bare language (``en``) matches
    every region of it. Case and ``_``/``-`` do not matter."""
    if allowed is None:
        return True
    have = normalize_locale(locale)
    for entry in allowed:
        want = normalize_locale(entry)
        if have == want or ("-" not in want and have.split("-")[0] == want):
            return True
    return False


def split_ids(value: Any) -> Any:
    """A comma list, ``@file`` (one id per line, ``#`` comments), or a list, as a list of ids."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("@"):
            path = Path(text[1:]).expanduser()
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
            value = [line.split("#", 1)[0].strip() for line in lines]
        else:
            value = text.split(",")
        value = [v.strip() for v in value if v.strip()]
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineConfig(_Strict):
    """How the model is served. Anything vLLM accepts goes in ``engine_kwargs``."""

    replicas: int = Field(default=1, ge=1, description="Engine replicas (data parallel); one per GPU group.")
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="GPUs per replica (vLLM tensor parallelism)."
    )
    batch_size: int = Field(default=32, ge=1, description="Rows per batch sent to an engine replica.")
    max_concurrent_batches: Optional[int] = Field(
        default=None,
        ge=1,
        description="Batches in flight per replica. Default: enough for twice the engine's max_num_seqs "
        "(256 unless engine_kwargs sets it), so a new request is already queued whenever a sequence "
        "finishes. Never fewer than max_num_seqs fill.",
    )
    max_tokens: Optional[int] = Field(
        default=None,
        ge=1,
        le=4096,
        description="Cap on generated tokens; by default each channel's template sets its own.",
    )
    temperature: float = Field(default=0.3, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    seed: int = Field(
        default=0, description="Engine-level sampling seed (per-request seeds break the CPU engine)."
    )
    max_model_len: int = Field(
        default=2048, ge=256, description="Context length the engine reserves per sequence."
    )
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
    cpu_kvcache_gib: int = Field(
        default=4, ge=1, description="KV cache size on the CPU (VLLM_CPU_KVCACHE_SPACE)."
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Passed straight to vLLM's engine; wins over the fields above."
    )


class JobConfig(_Strict):
    """Everything one nightly run needs to know."""

    pairs: Optional[str] = Field(
        default=None,
        description="User-product pairs: Parquet file or folder, local or s3://. Default: bundled sample "
        "data.",
    )
    users: Optional[str] = Field(
        default=None, description="User profiles (Parquet). Default: bundled sample data."
    )
    products: Optional[str] = Field(
        default=None, description="Product catalog (Parquet). Default: bundled sample data."
    )
    output: str = Field(default="./out", description="Local folder or s3://bucket/prefix for the results.")
    run_date: dt.date = Field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).date(),
        description="The date the run is for (partition key). Default: today in UTC.",
    )
    campaign: Optional[str] = Field(
        default=None,
        description="Only pairs of this campaign (when pairs carry campaign_id); also labels the run. "
        "Default: every pair, each under its own campaign_id.",
    )
    run_label: Optional[str] = Field(
        default=None,
        description="Names the run instead of the campaign: the partition campaign=<label>, the run id and "
        "the latest pointer (e.g. a backfill of some users). Same name rule as campaign.",
    )
    user_ids: Optional[list[str]] = Field(
        default=None,
        description="Only pairs of these users (flag: comma list or @file with one id per line). Default: "
        "all.",
    )
    product_ids: Optional[list[str]] = Field(
        default=None,
        description="Only pairs of these products (flag: comma list or @file with one id per line). Default: "
        "all.",
    )
    locales: Optional[list[Locale]] = Field(
        default=None,
        description="Only users whose locale is listed (en-US matches en-US only; en matches every en-*). "
        "Default: every locale.",
    )
    brand_voice: Optional[str] = Field(
        default=None,
        max_length=BRAND_VOICE_MAX_CHARS,
        description="Tone / brand voice in a few words (e.g. 'warm, cosy, never pushy'), added to every "
        "system prompt through the templates' {brand_voice} placeholder. Default: none.",
    )
    channels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CHANNELS), description="Channels to write."
    )
    variants: int = Field(default=1, ge=1, le=10, description="Copies per (pair, channel).")
    candidates: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Draws per (pair, channel), all gated; the best --variants of them are published "
        "(accepted, "
        "then review, then rejected; then numeric fidelity, attribute coverage, fit to the length limit: "
        "factory/candidates.py). Draw d goes to variant d mod variants, so at least --variants. 1 = one draw "
        "per variant, as before. Extra draws share their row's prompt, which the prefix cache partly serves.",
    )
    limit: Optional[int] = Field(default=None, ge=1, description="Use only the first N pairs (smoke runs).")
    facts: Optional[str] = Field(
        default=None,
        description="Product-facts table (local folder or s3://). When set, facts are extracted with the "
        "engine for new or changed products before generation (the rest are reused) and the prompts and "
        "the faithfulness rule use them. Default: the catalog's own selling points.",
    )
    model: str = Field(
        default=BUNDLED_MODEL, description="Local folder, s3:// folder or hub id of the model."
    )
    templates: Optional[str] = Field(
        default=None, description="Folder of prompt templates. Default: the packaged ones."
    )
    s3_endpoint: Optional[str] = Field(
        default=None, description="S3-compatible endpoint URL (MinIO, R2, a test server)."
    )
    s3_region: str = Field(default="us-east-1", description="Region for S3 requests.")
    s3_sse: Optional[Literal["AES256", "aws:kms"]] = Field(
        default=None, description="Server-side encryption for every object the job writes."
    )
    s3_sse_kms_key_id: Optional[str] = Field(
        default=None,
        description="KMS key id or ARN for s3_sse=aws:kms (default: the bucket's AWS managed key).",
    )
    s3_max_attempts: int = Field(
        default=10,
        ge=1,
        le=50,
        description="Tries per S3 request (throttling, 5xx and dropped connections are retried with "
        "backoff).",
    )
    rows_per_file: int = Field(
        default=50_000,
        ge=1,
        le=1_000_000,
        description="Rows per output file. Files are the resume unit: after a crash only rows in "
        "unfinished files are generated again.",
    )
    force: bool = Field(
        default=False, description="Run again as a new attempt even if the run is already published."
    )
    dedup_prompts: bool = Field(
        default=True,
        description="Generate once per identical prompt (same template, product, profile fields, locale and "
        "variant) and reuse the copy for every row that asked for it; each reusing row names its source "
        "row in dedup_of and is still judged by the quality gate on its own.",
    )
    progress_every_seconds: float = Field(
        default=60.0, gt=0, description="How often the driver logs rows done, rows/s, tokens/s and the ETA."
    )
    cpu_stage_num_cpus: float = Field(
        default=0.25,
        gt=0,
        le=8,
        description="CPUs reserved per light CPU task (join, render, finalize). Small so they fit "
        "beside the engine on a small node.",
    )
    cpu_stage_actors: Optional[int] = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Most actors each CPU stage (check, join, quality gate, reuse) may grow to. Default: one "
        "per "
        "8 CPUs of the cluster, at least 2, so the CPU side keeps up with tens of engine nodes.",
    )
    users_join_rows: int = Field(
        default=250_000,
        ge=0,
        description="A users table of at least this many users reaches the pairs through Ray Data's hash "
        "join, where each worker holds only its share of the users; a smaller one is broadcast (one copy per "
        "node) and looked up by an index built once per actor. 0: always the join. Measured (benchmarks/"
        "RESULTS.md section 15): the two cost the same at 100,000 users; at 1M the join takes 0.64x the "
        "time.",
    )
    shared_filesystem: bool = Field(
        default=False,
        description="Local pairs, output and facts paths are on a filesystem every node of the cluster "
        "mounts "
        "(NFS, EFS, Lustre). Without it a cluster of more than one node refuses local paths: workers would "
        "write to their own disks.",
    )
    ray_dashboard: bool = Field(
        default=False,
        description="Start Ray's dashboard with the local Ray the job starts when it finds no cluster. Off "
        "by "
        "default: on a small node its processes take CPU from the engine. A cluster the job joins (ray job "
        "submit, ray start) keeps its own dashboard either way.",
    )
    dry_run: bool = Field(
        default=False,
        description="Validate config and inputs, count the rows each campaign and channel owes, estimate "
        "tokens, GPU-hours and cost, print the plan; start no engine and write nothing.",
    )
    gpu_hour_price: float = Field(
        default=4.0,
        ge=0,
        description="USD per GPU-hour for the dry-run's cost estimate (on-demand H100 is roughly 2-4 USD "
        "on GPU clouds, more on the large ones; use your contract price).",
    )
    estimate_output_tokens_per_gpu_second: float = Field(
        default=H100_8B_OUTPUT_TOKENS_PER_SECOND,
        gt=0,
        description="ASSUMED generation throughput of one GPU, in output tokens per second, for the "
        "dry-run's GPU-hour estimate. Default 5,777: Red Hat's MLPerf Inference v5.1 Offline result for "
        "Llama-3.1-8B (FP8) with vLLM 0.10.0 on one H100 (redhat.com/en/blog/efficient-and-reproducible-"
        "llm-inference-red-hat-mlperf-inference-v51-results). Measure your own model and GPU and set it.",
    )
    offers: list[Offer] = Field(
        default_factory=list,
        max_length=MAX_OFFERS,
        description="Offers the run makes (kind and text, e.g. {kind: discount, text: '20% off knitwear "
        "with code WARM20'}): shown to the model in every system prompt ({offers}); copy that makes an "
        "offer of another kind is rejected (undeclared_offer) unless the product's own facts state it. "
        "Default: none, so no discount, free shipping, warranty, buy-one-get-one, money-back or gift may "
        "be promised.",
    )
    competitors: list[str] = Field(
        default_factory=list,
        max_length=MAX_COMPETITORS,
        description="Competitors' brand names; copy naming one is rejected (competitor). Catalog brands of "
        "other products are foreign_brand's business. A campaign's list is added to the job's.",
    )
    judge: bool = Field(
        default=False,
        description="Run the model judge after the gate (factory/stages/judge.py): a model reads each "
        "sampled copy "
        "the gate did not reject, with the product's facts and the customer's interests, and reports claims "
        "the "
        "facts do not support (unsupported_claim) and copy that does not fit (off_topic), review by default.",
    )
    judge_model: Optional[str] = Field(
        default=None,
        description="The judge's model (local folder, s3:// folder or hub id). Default: the run's model, "
        "on the same engine settings.",
    )
    judge_sample: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Share of the gate's accepted and review rows the judge reads, chosen by a hash of the "
        "row id "
        "(a resumed run judges the same rows).",
    )
    experiment: Optional[Any] = Field(
        default=None,
        description="The campaign's experiment (a campaign file's experiment: block; "
        "factory/experiments/config.py): its arms, allocation and holdout. Needs a campaign. Default: none.",
    )
    feedback: Optional[str] = Field(
        default=None,
        description="The feedback table (jobs/ingest_feedback.py's --output; local folder or s3://): an "
        "experiment's arms are allocated from it by Thompson sampling. Default: none (the declared shares); "
        "a folder with no table yet is the same.",
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

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: Any) -> Any:
        # Imported here: factory.experiments.config builds on this module.
        from factory.experiments.config import ExperimentConfig

        return ExperimentConfig.model_validate(value) if value is not None else value

    @field_validator("campaign", "run_label")
    @classmethod
    def _campaign_name(cls, value: Optional[str]) -> Optional[str]:
        return check_name(value) if value is not None else value

    @field_validator("user_ids", "product_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        return split_ids(value)

    @field_validator("user_ids", "product_ids")
    @classmethod
    def _some_ids(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and not value:
            raise ValueError("the list is empty (omit it to take every id)")
        return list(dict.fromkeys(value)) if value is not None else value

    @field_validator("locales", mode="before")
    @classmethod
    def _split_locales(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("locales")
    @classmethod
    def _known_locales(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return value
        if not value:
            raise ValueError("at least one locale is needed (omit locales to take every locale)")
        return list(dict.fromkeys(value))

    @field_validator("brand_voice")
    @classmethod
    def _brand_voice(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        value = " ".join(value.split())  # one line: it sits inside the system prompt
        if not value:
            raise ValueError("brand_voice is empty (omit it for no brand voice)")
        return value

    @field_validator("competitors")
    @classmethod
    def _competitors(cls, value: list[str]) -> list[str]:
        return clean_competitors(value)

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        if value.startswith("s3://") and len(value[5:].split("/")[0]) < 3:
            raise ValueError(f"{value!r}: S3 bucket names have at least 3 characters")
        return value.rstrip("/") or value

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> JobConfig:
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("s3_sse_kms_key_id needs s3_sse: aws:kms")
        return self

    @model_validator(mode="after")
    def _candidates_can_differ(self) -> JobConfig:
        if self.candidates > 1 and self.candidates < self.variants:
            raise ValueError(
                f"candidates ({self.candidates}) must be at least variants ({self.variants}): "
                "each variant keeps the best of its own draws"
            )
        if self.candidates > 1 and self.engine.temperature == 0:
            raise ValueError(
                "candidates > 1 needs engine.temperature > 0: greedy draws of one prompt are identical"
            )
        return self

    @model_validator(mode="after")
    def _inputs_together(self) -> JobConfig:
        given = [n for n in ("pairs", "users", "products") if getattr(self, n)]
        if given and len(given) != 3:
            missing = sorted({"pairs", "users", "products"} - set(given))
            raise ValueError(f"--pairs, --users and --products go together; missing: {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _experiment_needs_campaign(self) -> JobConfig:
        # Its assignment, feedback and previous nights are the campaign's.
        if self.experiment is not None and not self.campaign:
            raise ValueError(
                "experiment: an experiment belongs to one campaign; name it (campaign, --campaign)"
            )
        if self.experiment is not None and self.run_label:
            raise ValueError(
                f"experiment: --run-label {self.run_label} would publish the experiment's night "
                f"outside campaign {self.campaign}'s nights; leave the label out"
            )
        return self

    def storage_options(self) -> dict[str, Any]:
        """How every local or s3:// path of the run is opened (``storage.resolve``)."""
        return dict(
            s3_endpoint=self.s3_endpoint,
            s3_region=self.s3_region,
            s3_sse=self.s3_sse,
            s3_sse_kms_key_id=self.s3_sse_kms_key_id,
            s3_max_attempts=self.s3_max_attempts,
        )

    @property
    def uses_sample_data(self) -> bool:
        return self.pairs is None

    @property
    def campaign_label(self) -> str:
        return self.run_label or self.campaign or "all"

    @property
    def run_id(self) -> str:
        return f"{self.run_date.isoformat()}_{self.campaign_label}"


def engine_bound(name: str) -> Any:
    """The type of EngineConfig's field ``name`` with its bounds, optional: for
    files that may override it (a campaign's sampling, an experiment arm's)."""
    field = EngineConfig.model_fields[name]
    base = next(
        (a for a in getattr(field.annotation, "__args__", ()) if a is not type(None)), field.annotation
    )
    return Optional[Annotated[(base, *field.metadata)]]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's settings (UsageError naming the file and line if it is not a YAML mapping)."""
    return load_yaml_lines(path)[0]


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
