"""Campaign configs: one YAML file per campaign in a folder (``configs/``).

A campaign file says what one campaign's nightly run writes: its channels,
tone / brand voice, locales, quality overrides (extra banned / risky /
allowed terms, per-channel limits), sampling and variants, and when it is
active. ``--campaigns-dir configs`` runs every campaign active on the run
date (or the ones named with ``--campaign``), one run each, one after another.

Every file is validated before the first run starts, and every mistake in a
file is reported (not only the first), each naming the file, the setting's
path and what is wrong. Precedence, lowest first: defaults, the ``--config``
file, the campaign file, flags.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from factory.config import (
    BRAND_VOICE_MAX_CHARS,
    MAX_COMPETITORS,
    MAX_OFFERS,
    JobConfig,
    Locale,
    build_config,
    check_name,
    clean_competitors,
    engine_bound,
)
from factory.errors import UsageError, load_yaml_lines, settings_lines
from factory.experiments.config import ExperimentConfig, arm_definitions, same_arms
from factory.prompts import BRAND_VOICE, OFFERS, PromptTemplate, load_templates
from factory.quality.policy import Offer, QualityPolicy

CAMPAIGN_SUFFIXES = (".yaml", ".yml")
# Keys people write for a setting that has another name here.
_HINTS = {
    "tone": "brand_voice",
    "voice": "brand_voice",
    "id": "campaign_id",
    "name": "campaign_id",
    "enabled": "active",
    "start_date": "start",
    "end_date": "end",
    "languages": "locales",
    "temperature": "sampling.temperature",
    "top_p": "sampling.top_p",
    "max_tokens": "sampling.max_tokens",
    "banned_terms": "quality.banned_terms",
    "limits": "quality.limits",
    "experiment_name": "experiment_id",
    "holdout_share": "holdout",
    "exploration": "floor",
    "min_share": "floor",
    "variants_arm": "variant",
    "style": "brand_voice",
    "template": "templates",
    "weight": "share",
    "split": "share",
    "offer": "offers",
    "promotions": "offers",
    "discounts": "offers",
    "competitor": "competitors",
}


class CampaignError(UsageError):
    """Campaign configs that cannot run; ``problems`` holds one line per mistake."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the campaign configs:\n"
            + "\n".join(f"  {p}" for p in self.problems)
        )


class SamplingConfig(BaseModel):
    """Sampling for one campaign; unset keys keep the job's settings. Same bounds as the engine flags."""

    model_config = ConfigDict(extra="forbid")

    temperature: engine_bound("temperature") = Field(default=None, description="Sampling temperature (0-2).")
    top_p: engine_bound("top_p") = Field(default=None, description="Nucleus sampling threshold (0-1].")
    max_tokens: engine_bound("max_tokens") = Field(
        default=None,
        description="Cap on generated tokens for every channel (1-4096); default: each template's.",
    )


class CampaignConfig(BaseModel):
    """One campaign's settings, as written in ``configs/<campaign_id>.yaml``."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str = Field(
        description="The campaign's id: the pairs' campaign_id value, the run's partition "
        "and latest pointer. Must equal the file's name without .yaml."
    )
    description: Optional[str] = Field(default=None, description="For people; not sent to the model.")
    active: bool = Field(default=True, description="Run it nightly (between start and end when given).")
    start: Optional[dt.date] = Field(default=None, description="First run date it is active on (YYYY-MM-DD).")
    end: Optional[dt.date] = Field(default=None, description="Last run date it is active on (YYYY-MM-DD).")
    channels: list[str] = Field(description="Channels to write; each needs a prompt template.")
    locales: Optional[list[Locale]] = Field(
        default=None,
        description="Only users with these locales (en-US: that one; en: every en-*). Default: all.",
    )
    brand_voice: Optional[str] = Field(
        default=None,
        max_length=BRAND_VOICE_MAX_CHARS,
        description="Tone / brand voice in a few words, added to every system prompt "
        f"(the templates' {{{BRAND_VOICE}}} placeholder). At most {BRAND_VOICE_MAX_CHARS} characters.",
    )
    offers: Optional[list[Offer]] = Field(
        default=None,
        max_length=MAX_OFFERS,
        description="The campaign's offers, each {kind, text}; kind is discount, free_shipping, warranty, "
        "bogo, "
        "money_back or gift. Their text is shown to the model ({offers} in every system prompt) and is the "
        "only "
        "offer copy may make: any other kind is rejected (undeclared_offer). Default: the job's (none).",
    )
    competitors: Optional[list[str]] = Field(
        default=None,
        max_length=MAX_COMPETITORS,
        description="Competitors' brand names, added to the job's; copy naming one is rejected (competitor).",
    )
    variants: Optional[Annotated[(int, *JobConfig.model_fields["variants"].metadata)]] = Field(
        default=None, description="Copies per (pair, channel), 1-10. Default: the job's."
    )
    candidates: Optional[Annotated[(int, *JobConfig.model_fields["candidates"].metadata)]] = Field(
        default=None,
        description="Draws per (pair, channel), the best --variants kept, 1-16. Default: the job's "
        "(1; docs/quality-gate.md says when more pay).",
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Temperature, top_p, max_tokens."
    )
    quality: QualityPolicy = Field(
        default_factory=QualityPolicy,
        description="Quality gate overrides, laid over the job's: limits per channel (only the keys given), "
        "banned / risky / allowed terms (added to the job's), severity, repair.",
    )

    experiment: Optional[ExperimentConfig] = Field(
        default=None,
        description="An experiment: arms (templates, brand voice, sampling or a variant), their "
        "allocation and a holdout share (factory/experiments/config.py).",
    )

    _quality_given: dict[str, Any] = PrivateAttr(default_factory=dict)
    # Per arm, what it means (templates resolved to versions): fingerprints, the manifest, the unchanged
    # check.
    _arm_definitions: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_quality_as_written(cls, data: Any, handler):
        """QualityPolicy fills in every default; laying those over the job's
        quality would undo its settings. Keep what the file wrote."""
        model = handler(data)
        given = data.get("quality") if isinstance(data, dict) else None
        if isinstance(given, QualityPolicy):
            given = given.model_dump(exclude_unset=True, exclude={"limits"})
        model._quality_given = copy.deepcopy(given or {})
        return model

    @field_validator("campaign_id")
    @classmethod
    def _id(cls, value: str, info: ValidationInfo) -> str:
        check_name(value)
        stem = (info.context or {}).get("file_stem")
        if stem is not None and value != stem:
            raise ValueError(
                f"{value!r} must equal the file's name {stem!r} "
                f"(rename the file to {value}.yaml or fix the id)"
            )
        return value

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, value: Optional[dt.date], info: ValidationInfo) -> Optional[dt.date]:
        start = info.data.get("start")
        if value is not None and start is not None and value < start:
            raise ValueError(f"end {value} is before start {start}")
        return value

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value:
            raise ValueError("at least one channel is needed")
        templates = (info.context or {}).get("templates")
        unknown = [c for c in value if templates is not None and c not in templates]
        if unknown:
            raise ValueError(
                f"no template for {', '.join(map(repr, unknown))} (have: {', '.join(sorted(templates))})"
            )
        return list(dict.fromkeys(value))

    @field_validator("locales")
    @classmethod
    def _some_locales(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and not value:
            raise ValueError("at least one locale is needed (omit locales to take every locale)")
        return list(dict.fromkeys(value)) if value is not None else value

    @field_validator("brand_voice")
    @classmethod
    def _brand_voice(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        if value is None:
            return value
        value = " ".join(value.split())
        if not value:
            raise ValueError("empty (omit brand_voice for none)")
        templates: Optional[dict[str, PromptTemplate]] = (info.context or {}).get("templates")
        lacking = [
            c
            for c in info.data.get("channels") or []
            if templates and c in templates and BRAND_VOICE not in templates[c].fields
        ]
        if lacking:
            raise ValueError(
                f"the template(s) of {', '.join(lacking)} have no {{{BRAND_VOICE}}} placeholder "
                "in 'system', so the voice would never reach the model"
            )
        return value

    @field_validator("offers")
    @classmethod
    def _offers(cls, value: Optional[list[Offer]], info: ValidationInfo) -> Optional[list[Offer]]:
        templates: Optional[dict[str, PromptTemplate]] = (info.context or {}).get("templates")
        lacking = [
            c
            for c in info.data.get("channels") or []
            if value and templates and c in templates and OFFERS not in templates[c].fields
        ]
        if lacking:
            raise ValueError(
                f"the template(s) of {', '.join(lacking)} have no {{{OFFERS}}} placeholder in "
                "'system', so the offers would never reach the model"
            )
        return value

    @field_validator("competitors")
    @classmethod
    def _competitors(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return clean_competitors(value)

    @field_validator("quality", mode="before")
    @classmethod
    def _limit_channels(cls, value: Any, info: ValidationInfo) -> Any:
        templates = (info.context or {}).get("templates")
        limits = value.get("limits") if isinstance(value, dict) else None
        if templates is not None and isinstance(limits, dict):
            unknown = [c for c in limits if c not in templates]
            if unknown:
                raise ValueError(
                    f"limits name channel(s) with no template: {', '.join(map(repr, unknown))} "
                    f"(have: {', '.join(sorted(templates))})"
                )
        return value

    @field_validator("experiment")
    @classmethod
    def _experiment(
        cls, value: Optional[ExperimentConfig], info: ValidationInfo
    ) -> Optional[ExperimentConfig]:
        if value is None:
            return value
        channels = info.data.get("channels")
        templates = (info.context or {}).get("templates")
        if not channels or templates is None:
            return value  # channels already failed (or no templates to check against)
        variants = info.data.get("variants") or 1
        for i, arm in enumerate(value.arms):
            if arm.variant is not None and arm.variant >= variants:
                raise ValueError(
                    f"arms.{i} ({arm.name}): variant {arm.variant} does not exist: the campaign "
                    f"writes {variants} variant(s), numbered from 0 (set variants)"
                )
        definitions = arm_definitions(value, channels, templates, info.data.get("brand_voice"))
        problems = same_arms(definitions)
        if problems:
            raise ValueError(problems[0])
        return value

    @model_validator(mode="after")
    def _keep_arm_definitions(self, info: ValidationInfo) -> CampaignConfig:
        templates = (info.context or {}).get("templates")
        if self.experiment is not None and templates is not None:
            self._arm_definitions = arm_definitions(
                self.experiment, self.channels, templates, self.brand_voice
            )
        return self

    @property
    def arm_definitions(self) -> dict[str, dict[str, Any]]:
        """Per arm of the experiment, what it means (empty without an experiment)."""
        return copy.deepcopy(self._arm_definitions)

    def active_on(self, day: dt.date) -> bool:
        return (
            self.active
            and (self.start is None or self.start <= day)
            and (self.end is None or day <= self.end)
        )

    def why_inactive(self, day: dt.date) -> str:
        if not self.active:
            return "active: false"
        if self.start is not None and day < self.start:
            return f"starts {self.start}"
        return f"ended {self.end}"

    def job_values(self) -> dict[str, Any]:
        """What this campaign sets in a JobConfig (the ``--config`` file's shape)."""
        values: dict[str, Any] = {"campaign": self.campaign_id, "channels": list(self.channels)}
        for name in ("locales", "brand_voice", "variants", "candidates", "competitors"):
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        if self.offers is not None:
            values["offers"] = [o.model_dump() for o in self.offers]
        if self.experiment is not None:
            values["experiment"] = self.experiment.model_dump(exclude_none=True)
        engine = self.sampling.model_dump(exclude_none=True)
        if engine:
            values["engine"] = engine
        if self._quality_given:
            values["quality"] = copy.deepcopy(self._quality_given)
        return values


@dataclass(frozen=True)
class Campaign:
    path: Path
    config: CampaignConfig
    lines: dict = field(default_factory=dict)  # key path -> line in the file, for errors

    @property
    def id(self) -> str:
        return self.config.campaign_id


def _format_errors(
    path: Path,
    exc: ValidationError,
    lines: Optional[dict] = None,
    flags: Optional[dict[str, str]] = None,
    files: Sequence = (),
) -> list[str]:
    """One line per pydantic error: the flag or file (and line), the setting, what is wrong."""
    return settings_lines(exc, CampaignConfig, flags, [(path, lines or {}), *files], hints=_HINTS)


def load_campaign(
    path: str | Path, templates: dict[str, PromptTemplate]
) -> tuple[Optional[Campaign], list[str]]:
    """One campaign file: the campaign, or None and every problem found in it."""
    path = Path(path)
    try:
        raw, lines = load_yaml_lines(path, "a campaign file")
    except UsageError as exc:
        return None, exc.lines
    try:
        config = CampaignConfig.model_validate(raw, context={"file_stem": path.stem, "templates": templates})
    except ValidationError as exc:
        return None, _format_errors(path, exc, lines)
    return Campaign(path, config, lines), []


def load_campaigns(folder: str | Path, templates: dict[str, PromptTemplate]) -> dict[str, Campaign]:
    """Every ``*.yaml`` / ``*.yml`` in ``folder``, keyed by campaign id; raises
    CampaignError with every problem of every file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CampaignError([f"{folder}: no such folder (--campaigns-dir)"])
    files = sorted(p for p in folder.iterdir() if p.suffix in CAMPAIGN_SUFFIXES and p.is_file())
    if not files:
        raise CampaignError([f"{folder}: no campaign files (*.yaml) in the folder"])
    problems: list[str] = []
    campaigns: dict[str, Campaign] = {}
    for path in files:
        campaign, found = load_campaign(path, templates)
        problems.extend(found)
        if campaign is None:
            continue
        if campaign.id in campaigns:
            problems.append(
                f"{path}: campaign_id {campaign.id!r} is also defined in {campaigns[campaign.id].path}"
            )
            continue
        campaigns[campaign.id] = campaign
    if problems:
        raise CampaignError(problems)
    return campaigns


def split_names(values: Optional[Sequence[str] | str]) -> list[str]:
    """``--campaign a --campaign b,c`` -> [a, b, c] (order kept, repeats dropped)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    names = [n.strip() for v in values for n in str(v).split(",") if n.strip()]
    return list(dict.fromkeys(names))


def select(campaigns: dict[str, Campaign], names: Sequence[str], run_date: dt.date) -> list[Campaign]:
    """The named campaigns (each must exist and be active on the run date), or
    every campaign active on the run date, in id order."""
    if not names:
        return [c for _, c in sorted(campaigns.items()) if c.config.active_on(run_date)]
    problems = []
    for name in names:
        if name not in campaigns:
            close = difflib.get_close_matches(name, list(campaigns), 1)
            problems.append(
                f"--campaign {name}: no such campaign in the campaigns folder"
                + (f" (did you mean {close[0]}?)" if close else "")
                + f"; have: {', '.join(sorted(campaigns))}"
            )
        elif not campaigns[name].config.active_on(run_date):
            problems.append(
                f"{campaigns[name].path}: campaign {name!r} is not active on {run_date} "
                f"({campaigns[name].config.why_inactive(run_date)})"
            )
    if problems:
        raise CampaignError(problems)
    return [campaigns[n] for n in names]


def merge_values(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings merged key by key, term lists and
    competitors added to (a company-wide banned word stays banned), everything
    else (offers too: they are the campaign's) replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        elif (
            (key.endswith("_terms") or key == "competitors")
            and isinstance(value, list)
            and isinstance(out.get(key), list)
        ):
            out[key] = list(dict.fromkeys(out[key] + value))
        else:
            out[key] = copy.deepcopy(value)
    return out


def campaign_configs(
    file_values: dict[str, Any],
    flag_values: dict[str, Any],
    campaigns_dir: str | Path,
    names: Sequence[str],
    flags: Optional[dict[str, str]] = None,
    files: Sequence = (),
) -> list[tuple[Campaign, JobConfig]]:
    """One JobConfig per selected campaign: defaults < ``--config`` file <
    campaign file < flags. Everything is validated here, before any run."""
    templates_dir = flag_values.get("templates") or file_values.get("templates")
    templates = load_templates(templates_dir)
    campaigns = load_campaigns(campaigns_dir, templates)
    base = build_config(file_values, {k: v for k, v in flag_values.items() if k != "campaign"})
    chosen = select(campaigns, names, base.run_date)
    if len(chosen) > 1 and base.run_label:
        raise CampaignError(
            [
                f"--run-label {base.run_label}: one label cannot name {len(chosen)} runs "
                f"({', '.join(c.id for c in chosen)}); name one campaign with --campaign"
            ]
        )
    problems, out = [], []
    for campaign in chosen:
        try:
            config = build_config(
                merge_values(file_values, campaign.config.job_values()),
                {k: v for k, v in flag_values.items() if k != "campaign"},
            )
        except ValidationError as exc:
            problems.extend(_format_errors(campaign.path, exc, campaign.lines, flags, files))
            continue
        out.append((campaign, config))
    if problems:
        raise CampaignError(problems)
    return out
