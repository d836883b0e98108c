"""An experiment in a campaign file: its arms, allocation and holdout.

    experiment:
      experiment_id: winter_voice_1     # a new id starts a new experiment
      metric: click                     # what the bandit maximises: click or conversion per impression
      holdout: 0.05                     # users who get no copy at all (fixed for the experiment)
      allocation: thompson              # or fixed: the arms' shares as written, every night
      floor: 0.05                       # thompson: least share of every arm (exploration)
      arms:
        - name: cosy
          brand_voice: warm and cosy, never pushy
        - name: crisp
          brand_voice: short, crisp and factual
          sampling: {temperature: 0.7}
        - name: new_push
          templates: experiments/push_v2      # a folder with templates for (some of) the channels

An arm is a way of writing: its prompt templates (a folder; channels it does
not cover use the campaign's), its brand voice (the "prompt style") and its
sampling, or ``variant: k`` (the k-th of the campaign's variants). Arms must
differ from each other in at least one of these.

An arm's *definition* is what it means once templates are resolved: for every
channel the template file's version (a hash of its bytes), the voice, the
sampling, the variant. Its fingerprint is a hash of that. Once a run has
published an experiment, a later campaign file whose arm of the same name
means something else, or whose holdout or metric changed, is refused
(``check_unchanged``): the feedback collected so far would be about another
arm. Change the experiment id to start again. Channels may be added.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from factory.config import BRAND_VOICE_MAX_CHARS, check_name, engine_bound

HOLDOUT = "holdout"  # the arm of users who get no copy; no declared arm may take the name
MAX_HOLDOUT = 0.5
SHARE_TOLERANCE = 1e-6


class ArmSampling(BaseModel):
    """Sampling for one arm; unset keys keep the campaign's."""

    model_config = ConfigDict(extra="forbid")

    temperature: engine_bound("temperature") = Field(default=None, description="Sampling temperature (0-2).")
    top_p: engine_bound("top_p") = Field(default=None, description="Nucleus sampling threshold (0-1].")


class ArmConfig(BaseModel):
    """One arm: a way of writing the campaign's copy."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="The arm's name: the output rows' arm value. Letters, digits, '_', '-', '.'."
    )
    brand_voice: Optional[str] = Field(
        default=None,
        max_length=BRAND_VOICE_MAX_CHARS,
        description="The arm's tone / brand voice (instead of the campaign's). Default: the campaign's.",
    )
    templates: Optional[str] = Field(
        default=None,
        description="A folder of prompt templates for this arm (relative to the working directory, "
        "like --templates); channels it has no template for use the campaign's. "
        "Default: the campaign's templates.",
    )
    sampling: ArmSampling = Field(
        default_factory=ArmSampling, description="Temperature and top_p of this arm."
    )
    variant: Optional[int] = Field(
        default=None,
        ge=0,
        description="Serve this variant (0-based) of the campaign's variants to the arm's "
        "users, instead of all of them.",
    )
    share: Optional[float] = Field(
        default=None,
        gt=0,
        le=1,
        description="Share of the experiment's non-holdout users. allocation fixed: every night; "
        "thompson: the first night (before any feedback). Give every arm's share or none (equal shares).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        check_name(value)
        if value == HOLDOUT:
            raise ValueError(f"{HOLDOUT!r} is the name of the users who get no copy; name the arm otherwise")
        return value

    @field_validator("brand_voice")
    @classmethod
    def _voice(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        value = " ".join(value.split())
        if not value:
            raise ValueError("empty (omit brand_voice to use the campaign's)")
        return value


class ExperimentConfig(BaseModel):
    """A campaign's experiment: arms, how traffic is shared among them, the holdout."""

    model_config = ConfigDict(extra="forbid")

    experiment_id: str = Field(
        description="The experiment's id: the output rows' experiment_id, the key of its "
        "assignment and feedback. A new id starts a new experiment."
    )
    description: Optional[str] = Field(default=None, description="For people.")
    metric: Literal["click", "conversion"] = Field(
        default="click", description="What an arm is judged by: clicks or conversions per impression."
    )
    holdout: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_HOLDOUT,
        description="Share of the campaign's users who get no copy (listed in the run's holdout file), to "
        f"measure lift. At most {MAX_HOLDOUT}. Fixed for the experiment's life.",
    )
    allocation: Literal["thompson", "fixed"] = Field(
        default="thompson",
        description="thompson: each night's shares follow the feedback (Thompson "
        "sampling); fixed: the arms' shares as written.",
    )
    floor: float = Field(
        default=0.05,
        ge=0.0,
        le=0.5,
        description="thompson: every arm keeps at least this share of the non-holdout users (exploration).",
    )
    arms: list[ArmConfig] = Field(description="Two or more arms.")

    @field_validator("experiment_id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_name(value)

    @field_validator("arms")
    @classmethod
    def _arms(cls, value: list[ArmConfig]) -> list[ArmConfig]:
        if len(value) < 2:
            raise ValueError(f"an experiment needs at least two arms (has {len(value)})")
        seen: dict[str, int] = {}
        for i, arm in enumerate(value):
            if arm.name in seen:
                raise ValueError(f"arm name {arm.name!r} is used twice (arms.{seen[arm.name]} and arms.{i})")
            seen[arm.name] = i
        given = [a.share for a in value if a.share is not None]
        if given and len(given) != len(value):
            raise ValueError("give every arm a share, or none (equal shares)")
        if given and abs(sum(given) - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"the arms' shares add up to {sum(given):g}, not 1")
        return value

    @model_validator(mode="after")
    def _floor_fits(self) -> ExperimentConfig:
        if self.allocation == "thompson" and self.floor * len(self.arms) > 1 + SHARE_TOLERANCE:
            raise ValueError(
                f"floor {self.floor:g} for each of {len(self.arms)} arms is more than all the "
                f"traffic; at most {1 / len(self.arms):.4g}"
            )
        return self

    def initial_shares(self) -> dict[str, float]:
        """The shares as written (equal when none is): fixed allocation, and thompson before any feedback."""
        if self.arms[0].share is None:
            return {a.name: 1.0 / len(self.arms) for a in self.arms}
        return {a.name: float(a.share) for a in self.arms}

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]


def arm_definitions(
    experiment: ExperimentConfig,
    channels: Sequence[str],
    templates: Mapping[str, Any],
    brand_voice: Optional[str],
    load=None,
) -> dict[str, dict[str, Any]]:
    """Per arm, what it means: per channel the template file's version, the
    voice, the sampling and the variant (``templates``: the campaign's, by
    channel; ``brand_voice``: the campaign's). ``load`` loads an arm's folder
    (default factory.prompts.load_templates). Raises ValueError naming the
    arm when its folder cannot be used."""
    from factory.prompts import BRAND_VOICE

    if load is None:
        from factory.prompts import load_templates as load
    out = {}
    for i, arm in enumerate(experiment.arms):
        own = {}
        if arm.templates is not None:
            try:
                own = load(arm.templates)
            except Exception as exc:  # noqa: BLE001 - a template error is a line for the user
                raise ValueError(
                    f"arms.{i} ({arm.name}): templates {arm.templates}: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                ) from None
            if not any(c in own for c in channels):
                raise ValueError(
                    f"arms.{i} ({arm.name}): templates {arm.templates} has no template for any of "
                    f"the campaign's channels ({', '.join(channels)})"
                )
        chosen = {c: own.get(c) or templates[c] for c in channels if c in own or c in templates}
        voice = arm.brand_voice if arm.brand_voice is not None else brand_voice
        lacking = [c for c, t in chosen.items() if arm.brand_voice and BRAND_VOICE not in t.fields]
        if lacking:
            raise ValueError(
                f"arms.{i} ({arm.name}): brand_voice never reaches the model: the template(s) of "
                f"{', '.join(lacking)} have no {{{BRAND_VOICE}}} placeholder in 'system'"
            )
        versions = {c: t.file_version or t.version for c, t in chosen.items()}
        out[arm.name] = {
            "templates": dict(sorted(versions.items())),
            "brand_voice": voice,
            "sampling": arm.sampling.model_dump(exclude_none=True),
            "variant": arm.variant,
        }
    return out


def fingerprint(definition: Mapping[str, Any]) -> str:
    """A short, stable hash of an arm's definition."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def same_arms(definitions: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Problems: arms that mean exactly the same (they could not be told apart)."""
    by_print: dict[str, str] = {}
    problems = []
    for name, definition in definitions.items():
        fp = fingerprint(definition)
        if fp in by_print:
            problems.append(
                f"arms {by_print[fp]!r} and {name!r} mean the same (same templates, voice, sampling "
                "and variant): make them differ, or drop one"
            )
        by_print.setdefault(fp, name)
    return problems


def manifest_record(
    experiment: ExperimentConfig, definitions: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """What a run's manifest keeps of the experiment's declaration (``experiment.declaration``):
    enough for ``check_unchanged`` on the next night."""
    return {
        "experiment_id": experiment.experiment_id,
        "metric": experiment.metric,
        "holdout": experiment.holdout,
        "allocation": experiment.allocation,
        "floor": experiment.floor,
        "arms": {
            name: {"fingerprint": fingerprint(d), "definition": dict(d)} for name, d in definitions.items()
        },
    }


def check_unchanged(
    previous: Optional[Mapping[str, Any]],
    experiment: ExperimentConfig,
    definitions: Mapping[str, Mapping[str, Any]],
    where: str = "experiment",
) -> list[str]:
    """Problems (one line each) if this declaration changes what the previous
    run's (``previous``: its manifest's ``experiment.declaration``) meant
    under the same experiment id. A new id, or no previous run, is always fine.
    Allowed: new arms, dropped arms, new channels, new shares, floor, allocation."""
    if not previous or previous.get("experiment_id") != experiment.experiment_id:
        return []
    restart = "; to change it, start a new experiment (a new experiment_id)"
    problems = []
    for key in ("holdout", "metric"):
        if previous.get(key) != getattr(experiment, key):
            problems.append(
                f"{where}.{key}: was {previous.get(key)!r} in experiment {experiment.experiment_id!r}, "
                f"now {getattr(experiment, key)!r}" + restart
            )
    for name, definition in definitions.items():
        before = (previous.get("arms") or {}).get(name)
        if not before:
            continue
        old = before.get("definition") or {}
        changed = [
            f"{k} was {old.get(k)!r}, now {definition.get(k)!r}"
            for k in ("brand_voice", "sampling", "variant")
            if old.get(k) != definition.get(k)
        ]
        old_t, new_t = old.get("templates") or {}, definition.get("templates") or {}
        changed += [
            f"the {c} template was {old_t[c]}, now {new_t[c]}"
            for c in sorted(set(old_t) & set(new_t))
            if old_t[c] != new_t[c]
        ]
        if changed:
            problems.append(
                f"{where}: arm {name!r} of experiment {experiment.experiment_id!r} now means something "
                f"else ({'; '.join(changed)})" + restart
            )
    return problems
