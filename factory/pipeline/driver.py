"""``run()``: the nightly run as the driver sees it, one step a line."""

from __future__ import annotations

import logging
import time

from factory import candidates, model
from factory.cluster import check_shared_storage, place_model
from factory.config import JobConfig
from factory.facts.extract import attach_facts
from factory.footer import read_footers
from factory.pipeline import experiment, finish, publishing, resume, staging
from factory.pipeline.finish import RunResult
from factory.pipeline.passes import RunContext, candidates_folder, generation_passes, run_passes
from factory.pipeline.plan import load_users, prepare
from factory.progress import ProgressLog
from factory.publish import choose_attempt, config_hash, record_process, update_process
from factory.ray_session import configure_ray_data, start_or_join
from factory.storage import resolve

logger = logging.getLogger(__name__)


def run(config: JobConfig) -> RunResult:
    import ray

    started = time.time()
    plan = prepare(config)  # every check that can fail does so before Ray or the engine starts
    state = choose_attempt(plan.run, force=config.force)
    if state.action == "published":
        return publishing.already_published(plan, state.attempt, started, state.finished)
    attempt, resumed = state.attempt, state.action == "resume"
    logger.info(
        "%s attempt %d of run %s at %s",
        "Resuming" if resumed else "Starting",
        attempt.number,
        config.run_id,
        attempt.base.uri,
    )

    # The experiment's night (check, allocate, pin) before Ray does any row work.
    night = experiment.night(plan, attempt.base)

    start_or_join(dashboard=config.ray_dashboard)  # joins the cluster under `ray job submit`
    # On a cluster of many nodes a path must mean the same to every worker (factory/cluster.py).
    check_shared_storage(
        {
            "--pairs": plan.pairs.loc.uri,
            "--users": plan.users_input.loc.uri,
            "--output": plan.output.uri,
            "--facts": config.facts,
        },
        config.shared_filesystem,
    )
    configure_ray_data()
    process = record_process(attempt, state.action, {"config_hash": config_hash(config.model_dump_json())})
    from factory.stages.generate import detect_device

    device = detect_device(config.engine)
    place_model(plan.model_source, device, bundled=config.model == model.BUNDLED_MODEL)
    if config.judge and plan.judge_model_source != plan.model_source:
        place_model(plan.judge_model_source, device, bundled=config.judge_model == model.BUNDLED_MODEL)
    if config.facts:
        # Facts for new or changed products first (one engine, then released),
        # so the generation passes and the gate see them.
        from factory.facts.extract import ensure_facts

        facts = ensure_facts(
            plan.products,
            resolve(config.facts, **config.storage_options()),
            config.engine,
            plan.model_source,
            device,
            model_name=model.display_name(config.model),
            cpu_stage_num_cpus=config.cpu_stage_num_cpus,
        )
        plan.products = attach_facts(plan.products, facts)
    load_users(plan)  # read and checked on Ray: the driver holds a reference
    products = ray.put(plan.products)

    # Pass 1 and staging (CPU only): cheap, so a resumed attempt redoes them
    # (same input, same result).
    buckets = staging.check_pairs(plan, attempt, products, fresh=not resumed)
    owed = staging.stage_rows(plan, attempt, buckets, night)
    dead = read_footers(attempt.dead_letters)  # final once staged
    if sum(f.rows for f in dead):
        logger.warning(
            "%d pair(s) sent to the dead letters at %s", sum(f.rows for f in dead), attempt.dead_letters.uri
        )
    written = resume.already_written(attempt)
    logger.info(
        "The run owes %d row(s)%s",
        owed.rows,
        f"; resuming: {written.rows} already written or queued for repair" if written.rows else "",
    )

    progress = ProgressLog(owed.rows, config.progress_every_seconds, already_done=written.copies)
    with progress:  # its counter exists from here on
        ctx = RunContext(plan, attempt, products, device, resumed, counter=progress.counter)
        rows = run_passes(generation_passes(ctx), progress, config.cpu_stage_num_cpus, config.rows_per_file)

    files = finish.check_exactly_once(attempt, owed)
    review = finish.settle_review_queue(plan, attempt, files)
    result = finish.summarize(plan, attempt, state.action, files, dead, time.time() - started, review)
    first_drafts, repairs, reused = (rows.get(p, 0) for p in ("first drafts", "repair", "reuse"))
    result.rows_generated, result.rows_resumed, result.rows_reused = (
        first_drafts + repairs,
        written.rows,
        reused,
    )
    result.progress = progress.samples
    if config.candidates > 1:  # the attempt's draws, from their files' footers (gone once published)
        result.work["candidates"] = {
            "per_pair_channel": config.candidates,
            **candidates.tally(read_footers(candidates_folder(attempt))),
        }
    if night is not None:
        result.holdout, result.experiment = experiment.holdout_files(attempt), night.manifest_record()
        logger.info(
            "Experiment %s: %d holdout row(s) (no copy) in %s",
            night.declaration["experiment_id"],
            result.holdout["rows"],
            experiment.holdout_folder(attempt).uri,
        )
    # Engine requests this process made; reused rows cost none. The manifest's history keeps them.
    update_process(
        process,
        finished_at=publishing.now(),
        rows_expected=owed.rows,
        rows_resumed=written.rows,
        rows_generated=first_drafts + repairs,
        first_drafts=first_drafts,
        repairs=repairs,
        rows_reused=reused,
        candidates_drawn=rows.get("candidates", 0),
    )
    summary = finish.write_summary(plan, attempt, result, device)
    report_file = finish.write_report(plan, attempt, files, summary, experiment.views(plan, night))
    publishing.publish_run(plan, attempt, result, summary, device, dead, report_file)
    return result
