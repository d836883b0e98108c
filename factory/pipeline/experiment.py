"""A run's experiment (a campaign's ``experiment:``), as the nightly run uses it.

    resolve()       on the driver, in prepare(): every arm's templates as
                    rendered (its folder over the campaign's, its voice, the
                    campaign's offers), its definition and fingerprint
    night()         after the attempt is chosen, before Ray: check the
                    declaration against the last published night, allocate
                    (Thompson sampling over --feedback), pin (factory.experiments.night)
    ArmRows         in each staging task: every owed row gets its user's arm;
                    holdout users' rows go to the attempt's holdout/ files and
                    are owed no copy; an arm that serves one variant keeps that one
    holdout_files() the holdout files' footers, for the summary and manifest
    views()         the report's Experiments section

The arm is decided once per user and night, at staging, before prompts and
row keys exist: an arm that changes the template changes the prompt, and two
arms never share a copy (their prompt keys differ, factory.dedup).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.errors import UsageError
from factory.footer import read_footers
from factory.prompts import PromptTemplate, apply_campaign, load_templates
from factory.storage import Location, write_parquet

logger = logging.getLogger(__name__)


@dataclass
class PlannedExperiment:
    """The run's experiment resolved on the driver (``plan_night`` reads
    ``campaign_id``, ``experiment`` and ``arm_definitions``)."""

    campaign_id: str  # the run's campaign: where its nights are published, its feedback's key
    experiment: Any  # an ExperimentConfig
    arm_definitions: dict[str, dict[str, Any]]
    arm_templates: dict[str, dict[str, PromptTemplate]]  # per arm, every channel's template as rendered

    @property
    def arm_sampling(self) -> dict[str, dict[str, float]]:
        """Per arm that sets any, its temperature / top_p (the first drafts')."""
        out = {a.name: a.sampling.model_dump(exclude_none=True) for a in self.experiment.arms}
        return {name: s for name, s in out.items() if s}

    @property
    def arm_variants(self) -> dict[str, int]:
        return {a.name: a.variant for a in self.experiment.arms if a.variant is not None}


def resolve(config, raw_templates: dict[str, PromptTemplate]) -> Optional[PlannedExperiment]:
    """The run's experiment, or None. ``raw_templates``: the run's templates
    as loaded (before the campaign's voice and offers). Raises UsageError."""
    from factory.experiments.config import arm_definitions, same_arms

    experiment = config.experiment
    if experiment is None:
        return None
    where = f"campaign {config.campaign}: experiment {experiment.experiment_id}"
    problems = [
        f"{where}: arms.{i} ({a.name}): variant {a.variant} does not exist: the run writes "
        f"{config.variants} variant(s), numbered from 0"
        for i, a in enumerate(experiment.arms)
        if a.variant is not None and a.variant >= config.variants
    ]
    try:
        definitions = arm_definitions(experiment, config.channels, raw_templates, config.brand_voice)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None
    problems += [f"{where}: {p}" for p in same_arms(definitions)]
    if problems:
        raise UsageError(*problems)
    offers = [o.text for o in config.offers]
    arm_templates = {}
    for arm in experiment.arms:
        own = load_templates(arm.templates) if arm.templates else {}
        voice = arm.brand_voice if arm.brand_voice is not None else config.brand_voice
        arm_templates[arm.name] = apply_campaign({**raw_templates, **own}, voice, offers, config.channels)
    return PlannedExperiment(config.campaign_label, experiment, definitions, arm_templates)


def night(plan, attempt_base: Location, pin: bool = True):
    """This night's NightPlan (factory.experiments.night.plan_night), or None
    without an experiment. ``pin`` False: the dry run (nothing written)."""
    from factory.experiments.night import plan_night
    from factory.publish import published_manifest
    from factory.storage import resolve as resolve_location

    if plan.experiment is None:
        return None
    config = plan.config
    feedback = resolve_location(config.feedback, **config.storage_options()) if config.feedback else None
    # A --force rerun of a published night replays that night's allocation.
    published = published_manifest(plan.run)
    planned = plan_night(
        plan.experiment,
        config.run_date,
        plan.output,
        attempt_base,
        feedback=feedback,
        published=published,
        pin=pin,
    )
    alloc = planned.allocation
    logger.info(
        "Experiment %s: %s allocation (%s), holdout %.3g, shares %s",
        alloc["experiment_id"],
        alloc["method"],
        planned.source,
        alloc["holdout"],
        ", ".join(f"{a}={s:.3f}" for a, s in alloc["shares"].items()),
    )
    return planned


class ArmRows:
    """Staging's arm step (one bucket's owed rows at a time): adds
    ``experiment_id`` and ``arm`` (null without an experiment), writes the
    holdout users' rows to the holdout files and returns the rows still owed
    a copy. Deterministic: same pinned allocation, same rows, same files."""

    def __init__(
        self, assign_args: Optional[dict[str, Any]], arm_variants: dict[str, int], run_id: str, run_date
    ):
        from factory.experiments.assign import Assigner, Layout

        self._assigner = (
            Assigner(
                assign_args["experiment_id"], assign_args["holdout"], Layout.from_json(assign_args["layout"])
            )
            if assign_args
            else None
        )
        self._variants = arm_variants
        self._run_id, self._run_date = run_id, run_date

    @classmethod
    def of(cls, plan, planned) -> ArmRows:
        """The run's arm step (``planned``: the night's NightPlan, or None)."""
        config = plan.config
        return cls(
            planned.assign_args if planned else None,
            plan.experiment.arm_variants if planned else {},
            config.run_id,
            config.run_date,
        )

    def __call__(
        self, rows: pa.Table, users: pa.Table, holdout: Optional[Location], prefix: str = "part"
    ) -> tuple[pa.Table, int]:
        """``rows``: owed rows (user, product, channel, variant, the key's
        campaign); ``users``: the bucket's users (for the locale);
        ``holdout``: the folder of the holdout files (None: the dry run,
        nothing written). Returns (rows owed a copy, holdout rows)."""
        from factory.experiments.assign import HOLDOUT, HoldoutRows
        from factory.pipeline.owed import CAMPAIGN

        n = rows.num_rows
        if self._assigner is None:
            return (
                rows.append_column(C.EXPERIMENT_ID, pa.nulls(n, pa.string())).append_column(
                    C.ARM, pa.nulls(n, pa.string())
                )
            ), 0
        arms = pa.array([self._assigner.arm_of(u) for u in rows[C.USER_ID].to_pylist()], pa.string())
        rows = rows.append_column(
            C.EXPERIMENT_ID, pa.array([self._assigner.experiment_id] * n, pa.string())
        ).append_column(C.ARM, arms)
        held = rows.filter(pc.equal(rows[C.ARM], HOLDOUT))
        written = int(pc.sum(pc.equal(held[C.VARIANT], 0)).as_py() or 0)  # one per pair and channel
        if held.num_rows and holdout is not None:
            locale = users[C.LOCALE].take(pc.index_in(held[C.USER_ID], value_set=users[C.USER_ID]))
            keyed = held.set_column(held.column_names.index(C.CAMPAIGN_ID), C.CAMPAIGN_ID, held[CAMPAIGN])
            table = HoldoutRows(self._run_id, self._run_date)(keyed.append_column(C.LOCALE, locale))
            if table.num_rows:
                write_parquet(holdout.join(f"{prefix}.parquet"), table)
        keep = pc.not_equal(rows[C.ARM], HOLDOUT)
        for arm, variant in self._variants.items():  # an arm that serves one variant owes only that one
            keep = pc.and_(keep, pc.or_(pc.not_equal(rows[C.ARM], arm), pc.equal(rows[C.VARIANT], variant)))
        return rows.filter(keep), written


def holdout_folder(attempt) -> Location:
    from factory.experiments.night import HOLDOUT_DIR

    return attempt.base.join(HOLDOUT_DIR)


def holdout_files(attempt) -> dict[str, Any]:
    """The attempt's holdout files (from footers): ``{rows, files: [{path, rows, bytes}]}``."""
    from factory.experiments.night import HOLDOUT_DIR

    found = read_footers(holdout_folder(attempt))
    return {
        "rows": sum(f.rows for f in found),
        "files": [{"path": f"{HOLDOUT_DIR}/{f.file}", "rows": f.rows, "bytes": f.size} for f in found],
    }


def views(plan, planned) -> list:
    """The report's Experiments section: tonight's allocation after the
    published nights', and the feedback table's counts (none yet: empty)."""
    from factory.experiments.night import allocation_history
    from factory.experiments.report import experiment_view
    from factory.experiments.table import read_feedback
    from factory.storage import resolve as resolve_location

    if planned is None:
        return []
    config, experiment = plan.config, plan.experiment
    table = None
    if config.feedback:
        try:
            table, _ = read_feedback(resolve_location(config.feedback, **config.storage_options()))
        except FileNotFoundError:
            table = None
    history = [
        r
        for r in allocation_history(
            plan.output, experiment.campaign_id, experiment.experiment.experiment_id, config.run_date
        )
        if r.get("run_date") != config.run_date.isoformat()
    ]  # tonight's is this run's own
    return [
        experiment_view(
            experiment.experiment,
            config.campaign or experiment.campaign_id,
            table,
            history + [planned.allocation],
        )
    ]
