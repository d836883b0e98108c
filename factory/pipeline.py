"""The nightly run: plan on the driver, then stream through the stages.

    prepare()  validate config, templates and inputs; read the lookup tables;
               resolve the model. No engine time is spent before this passes.
    run()      pick the attempt: nothing to do if the run is published, else
               resume the unfinished attempt or start a new one
               pass 1 (CPU only): pairs the tables cannot serve -> dead letters;
                       the good rows are counted (what the run must deliver)
               pass 2: join -> skip rows already written -> render -> generate
                       -> quality gate -> copies (rejected rows -> repair queue,
                       review rows also -> review queue)
               pass 3: repair queue -> render with the reasons -> generate
                       -> quality gate -> copies        (only if any were rejected)
               then:   from the files' footers: every row exactly once, the
                       review queue settled, the summary; last the manifest,
                       _SUCCESS and the latest pointer

Output layout under ``--output`` (see ``factory.publish``):

    runs/date=YYYY-MM-DD/campaign=<name>/attempt=NNNN/
        copies/ dead_letters/ review/ summary.json manifest.json _SUCCESS
    latest/campaign=<name>.json

Readers trust only what a manifest lists (``factory.reader``). The path key is
``date=``, not ``run_date=``: the files carry a ``run_date`` column (a date),
and a path key of the same name is inferred as a string, which pandas and
pyarrow readers refuse to merge with it.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory.errors import Incomplete, UsageError
from factory.fingerprint import Fingerprint
from factory import columns as C
from factory import dead_letters, dedup, footer, inputs, model, report, sample_data
from factory.cluster import check_shared_storage, place_model, stage_actors
from factory.config import JobConfig
from factory.facts.extract import NO_FACTS, attach_facts
from factory.prompts import PromptTemplate, apply_brand_voice, load_templates
from factory.quality.metrics import corpus_figures
from factory.ray_session import engine_paced_scheduling, start_or_join
from factory.stages import FinalizeRows, JoinProfiles, QualityGate, RenderPrompts, RenderRepair, build_generate_stage
from factory.stages.check import CheckPairs, ReadPairs
from factory.stages.generate import concurrent_batches
from factory.stages.join import row_id
from factory.stages.reuse import ReuseCopy
from factory.stages.review import ReviewRows
from factory.stages.write import Sink, WriteParquetFiles
from factory.preflight import check_engine_kwargs, check_place
from factory.progress import ProgressLog
from factory.publish import (SUMMARY, Attempt, abandoned_attempts, choose_attempt, config_hash, publish, read_history,
                             record_process, update_latest, update_process)
from factory.footer import Footer, read_footers
from factory.storage import (Location, delete_dir_if_exists, delete_file, list_files, put_bytes, read_bytes, read_parquet,
                             resolve, retry_io, write_parquet)

logger = logging.getLogger(__name__)

# What pass 1 keeps of a servable pair for the generation passes.
STAGED_PAIR_COLUMNS = (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.SOURCE, C.SOURCE_ROW)
STAGED_PAIR_SCHEMA = pa.schema([(c, pa.string()) for c in STAGED_PAIR_COLUMNS[:-1]] + [(C.SOURCE_ROW, pa.int64())])


class ConfigError(UsageError):
    """A setting that cannot work; raised on the driver before the engine starts."""


@dataclass
class Plan:
    """What prepare() checked and resolved, handed to run()."""

    config: JobConfig
    templates: dict[str, PromptTemplate]
    pairs: inputs.ParquetInput
    users: pa.Table
    products: pa.Table
    table_reports: list[inputs.TableReport]
    output: Location
    run: Location  # runs/date=D/campaign=C: the run's attempts live here
    model_source: str


class IncompleteRun(Incomplete):
    """The written rows are not exactly the expected ones; nothing was published."""


@dataclass
class RunResult:
    run_id: str
    attempt: int
    action: str  # new, resume, or published (nothing was done)
    output_uri: str  # the attempt's folder
    manifest_uri: str
    rows_written: int
    dead_letters: int
    rows_by_channel: dict[str, int]
    dead_letters_by_reason: dict[str, int]
    samples: list[dict[str, Any]]
    seconds: float
    files: list[dict[str, Any]] = field(default_factory=list)  # {path, rows, bytes}
    quality: dict[str, Any] = field(default_factory=dict)
    rows_generated: int = 0  # by this process; a resumed run skips what was written before
    rows_resumed: int = 0  # rows found written by an earlier process of the attempt
    rows_reused: int = 0  # by this process: rows that took an identical prompt's copy
    progress: list[dict[str, Any]] = field(default_factory=list)  # the per-minute samples
    work: dict[str, Any] = field(default_factory=dict)  # engine work done and avoided (factory.dedup)


def run_location(output: Location, config: JobConfig) -> Location:
    return output.join("runs", f"date={config.run_date.isoformat()}", f"campaign={config.campaign_label}")


def prepare(config: JobConfig) -> Plan:
    templates = load_templates(config.templates)
    unknown = [c for c in config.channels if c not in templates]
    if unknown:
        raise ConfigError(f"--channels: no template for {', '.join(unknown)} (have: {', '.join(sorted(templates))})")
    # The campaign's brand voice goes into every system prompt (and the template versions).
    templates = apply_brand_voice(templates, config.brand_voice, config.channels)

    if config.uses_sample_data:
        folder = model.cache_root() / "sample_data"
        paths = sample_data.generate(folder)
        logger.info("Using the bundled sample data in %s", folder)
        pairs_uri, users_uri, products_uri = paths.pairs, paths.users, paths.products
    else:
        pairs_uri, users_uri, products_uri = config.pairs, config.users, config.products

    where = config.storage_options()
    # Every store the run touches, before the first read: a wrong endpoint,
    # bucket or credential is one line here, not a traceback later. A dry run
    # writes nothing, so it checks that the output can be read, not written.
    for flag, uri in (("--pairs", pairs_uri), ("--users", users_uri), ("--products", products_uri)):
        check_place(uri, flag, where)
    check_place(config.output, "--output", where, write=not config.dry_run)
    check_place(config.facts, "--facts", where, write=not config.dry_run)
    check_engine_kwargs(config.engine.engine_kwargs)
    pairs = inputs.check_schema(resolve(pairs_uri, **where), inputs.PAIRS)
    users, users_report = inputs.read_lookup_table(resolve(users_uri, **where), inputs.USERS, C.USER_ID)
    products, products_report = inputs.read_lookup_table(resolve(products_uri, **where), inputs.PRODUCTS, C.PRODUCT_ID)

    out = resolve(config.output, **where)

    # What the prompts and the faithfulness rule call the product's facts: the
    # catalog's selling points until run() swaps in extracted ones (--facts).
    products = attach_facts(products, NO_FACTS)
    return Plan(
        config=config, templates=templates, pairs=pairs,
        users=users, products=products, table_reports=[users_report, products_report],
        output=out, run=run_location(out, config),
        model_source=model.resolve_model(config.model, where),
    )


ROWS_PER_FILE = 50_000
# Rows per block of the generation pass. Ray Data's cost per block is what
# the CPU side spends most on (measured with an instant engine: 50-row blocks
# 291 rows per CPU-second, 512-row blocks 936; at 1M pairs 2,048-row blocks
# 5,819 rows/s against 3,185 with 512, and the driver, which keeps a little
# per block, grew half as much), but a small run needs enough blocks to keep
# every replica's batches in flight from the start.
MIN_ROWS_PER_BLOCK, MAX_ROWS_PER_BLOCK = 32, 2048
MAX_BLOCKS = 2_000


def stage_pool(config: JobConfig):
    """The actor pool of one CPU stage: it grows with the cluster (factory/cluster.py)."""
    import ray

    return ray.data.ActorPoolStrategy(min_size=1, max_size=stage_actors(config.cpu_stage_actors))


def rows_per_block(rows: int, replicas: int, max_concurrent_batches: int) -> int:
    """About four blocks per batch slot in flight, within [32, 2048] rows."""
    return max(MIN_ROWS_PER_BLOCK, min(MAX_ROWS_PER_BLOCK, rows // (4 * replicas * max_concurrent_batches)))


def _write(ds, sinks: dict[str, Sink], num_cpus: float, route: str | None = None,
           rows_per_file: int = ROWS_PER_FILE) -> list[dict[str, Any]]:
    """Write ``ds`` to its sinks; return one {sink, file, rows, bytes} per file written."""
    written = ds.map_batches(WriteParquetFiles(sinks, route), batch_size=rows_per_file,
                             batch_format="pyarrow", num_cpus=num_cpus)
    return sorted(written.take_all(), key=lambda r: (r["sink"], r["file"] or ""))


# What the repair pass needs of a rejected row: its keys, its chat and why it failed.
REPAIR_QUEUE_COLUMNS = (C.ROW_ID, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT, C.LOCALE,
                        C.TEMPLATE_VERSION, "brand", C.MESSAGES, C.MAX_TOKENS, C.STOP, C.REASONS,
                        C.REASON_DETAILS, C.COPY_LENGTH_LIMIT)


def _repair_queue_rows(batch: pa.Table) -> pa.Table:
    return batch.select(list(REPAIR_QUEUE_COLUMNS))


def _keep_rows(batch: pa.Table, dead: bool) -> pa.Table:
    mask = pc.is_valid(batch[C.REASON]) if dead else pc.is_null(batch[C.REASON])
    return batch.filter(mask)


def _scope_filter(batch: pa.Table, campaign: str | None, user_ids, product_ids, excluded_users) -> pa.Table:
    """The pairs this run is about: its campaign, the users and products it
    names, users whose locale it writes. Pairs outside are not this run's
    business (not dead letters); unknown ids still reach the checks."""
    mask = pc.equal(batch[C.CAMPAIGN_ID], campaign) if campaign and C.CAMPAIGN_ID in batch.column_names else None
    for column, values, keep in ((C.USER_ID, user_ids, True), (C.PRODUCT_ID, product_ids, True),
                                 (C.USER_ID, excluded_users, False)):
        if values is None:
            continue
        hit = pc.is_in(batch[column], value_set=values)
        hit = hit if keep else pc.invert(hit)
        mask = hit if mask is None else pc.and_(mask, hit)
    return batch if mask is None else batch.filter(pc.fill_null(mask, False))


def _scope(plan: Plan) -> dict[str, Any]:
    """Arguments of ``_scope_filter``; empty when the run takes every pair."""
    from factory.config import locale_allowed

    config = plan.config
    ids = {"user_ids": config.user_ids, "product_ids": config.product_ids}
    excluded = None
    if config.locales is not None:
        users = plan.users
        excluded = [u for u, loc in zip(users[C.USER_ID].to_pylist(), users[C.LOCALE].to_pylist())
                    if not locale_allowed(loc, config.locales)]
        logger.info("Locales %s: %d of %d user(s) are out of scope", ", ".join(config.locales), len(excluded),
                    users.num_rows)
    scope = {"campaign": config.campaign,
             **{k: pa.array(v, pa.string()) if v is not None else None for k, v in ids.items()},
             "excluded_users": pa.array(excluded, pa.string()) if excluded else None}
    return scope if any(v is not None for v in scope.values()) else {}


def checked_pairs(plan: Plan, lookups: dict[str, Any]):
    """Every pair in scope, read with its provenance and checked (pass 1)."""
    import ray

    config = plan.config
    light = config.cpu_stage_num_cpus
    pairs = plan.pairs
    items = _row_group_items(pairs, config.limit, config.campaign)
    display = {f: (f"s3://{f}" if pairs.loc.is_s3 else f) for f in pairs.files}
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(ReadPairs(pairs.loc.fs, pairs.columns, display), batch_size=1, batch_format="numpy",
                        num_cpus=light)
    scope = _scope(plan)
    if scope:
        ds = ds.map_batches(_scope_filter, fn_kwargs=scope, batch_format="pyarrow", num_cpus=light)
    return ds.map_batches(
        CheckPairs,
        fn_constructor_kwargs=dict(**lookups, known_channels=list(plan.templates)),
        batch_format="pyarrow", compute=stage_pool(config), num_cpus=light,
    )


# How many of the input's campaigns a "no such campaign" error lists.
LISTED_CAMPAIGNS = 20


def _campaigns_in(pairs: inputs.ParquetInput, num_cpus: float) -> str:
    """The campaigns the pairs name, as one line for an error (counted by Ray, not the driver)."""
    import ray

    files = [f for f in pairs.files if C.CAMPAIGN_ID in pairs.names[f]]
    if not files:
        return "the pairs have no campaign_id column: leave --campaign out to take every pair"
    names = ray.data.read_parquet(files, filesystem=pairs.loc.fs, columns=[C.CAMPAIGN_ID],
                                  num_cpus=num_cpus).unique(C.CAMPAIGN_ID)
    names = sorted(n for n in names if n is not None)
    shown = ", ".join(names[:LISTED_CAMPAIGNS]) + (f" and {len(names) - LISTED_CAMPAIGNS} more"
                                                   if len(names) > LISTED_CAMPAIGNS else "")
    return f"the pairs have these campaigns: {shown}" if names else "no pair names a campaign"


def _row_group_items(pairs: inputs.ParquetInput, limit: int | None, campaign: str | None) -> list[dict[str, Any]]:
    """One read task per row group, in file order. With ``limit`` the driver
    finds where the first N pairs in scope end (reading only as far as
    needed), so every pass and every resumed process sees the same N."""
    items, found = [], 0
    for path in pairs.files:
        first = 0
        for group, n in enumerate(pairs.row_groups.get(path, [])):
            take = n
            if limit is not None:
                if found >= limit:
                    return items
                if campaign and C.CAMPAIGN_ID in pairs.names[path]:
                    column = retry_io(lambda: pq.ParquetFile(path, filesystem=pairs.loc.fs).read_row_group(
                        group, columns=[C.CAMPAIGN_ID])[C.CAMPAIGN_ID].to_pylist())
                    hits = [i for i, c in enumerate(column) if c == campaign]
                else:
                    hits = list(range(n))
                if found + len(hits) > limit:
                    take = hits[limit - found - 1] + 1
                found += len([h for h in hits if h < take])
            if n:
                items.append({"file": path, "row_group": group, "first_row": first, "take": take})
            first += n
    return items


def joined_dataset(plan: Plan, lookups: dict[str, Any], staged: list, folder: Location, pair_count: int,
                   done=None):
    """The staged (servable) pairs joined with the profiles, one row per
    (pair, channel, variant), minus ``done`` (an object ref to row ids an
    earlier process already wrote)."""
    import ray

    config = plan.config
    light = config.cpu_stage_num_cpus
    # Small blocks stream: the engine gets work as soon as the first blocks are
    # rendered, progress moves, finished rows leave memory early. Left to
    # itself Ray made one block per file and a whole file one engine task (seen:
    # no progress for minutes). Split at the read, not with repartition(): its
    # task asks for a whole CPU, which a 2-core node running an engine lacks.
    per_block = rows_per_block(pair_count, config.engine.replicas, concurrent_batches(config.engine))
    blocks = max(1, min(MAX_BLOCKS, -(-pair_count // per_block)))
    ds = ray.data.read_parquet([i.path for i in staged], filesystem=folder.fs,
                               columns=[C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT],
                               override_num_blocks=blocks, num_cpus=light)
    return ds.map_batches(
        JoinProfiles,
        fn_constructor_kwargs=dict(
            **lookups, channels=config.channels,
            known_channels=list(plan.templates), variants=config.variants, campaign=config.campaign,
            run_id=config.run_id, done=done,
        ),
        batch_format="pyarrow", compute=stage_pool(config), num_cpus=light,
    )


def prompt_stages(plan: Plan) -> tuple[JoinProfiles, RenderPrompts]:
    """The run's join and render stages, built as ``run`` builds them, to call
    on the driver without Ray: ``render(join(pairs))`` are the prompts the
    engine would get (the benchmarks compare contenders on exactly these)."""
    config = plan.config
    return (JoinProfiles(plan.users, plan.products, config.channels, list(plan.templates), config.variants,
                         config.campaign, config.run_id),
            RenderPrompts(plan.templates, config.engine.max_tokens))


def run(config: JobConfig) -> RunResult:
    import ray

    started = time.time()
    plan = prepare(config)  # every check that can fail does so before Ray or the engine starts
    state = choose_attempt(plan.run, force=config.force)
    if state.action == "published":
        return _already_published(plan, state.attempt, started)
    attempt = state.attempt
    logger.info("%s attempt %d of run %s at %s", "Resuming" if state.action == "resume" else "Starting",
                attempt.number, config.run_id, attempt.base.uri)

    start_or_join(dashboard=config.ray_dashboard)  # joins the cluster under `ray job submit`
    # On a cluster of many nodes a path must mean the same to every worker (factory/cluster.py).
    check_shared_storage({"--pairs": plan.pairs.loc.uri, "--output": plan.output.uri, "--facts": config.facts},
                         config.shared_filesystem)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    # The V2 Parquet reader lists files in a task that always asks for a whole
    # CPU; once the engine actor holds its CPU on a small node that task never
    # schedules (seen on 2 cores: the run hangs at "ListFiles 0/1"). The V1
    # reader honours num_cpus, and the driver has listed the files already.
    ctx.use_datasource_v2 = False
    process = record_process(attempt, state.action, {"config_hash": config_hash(config.model_dump_json())})

    light = config.cpu_stage_num_cpus
    from factory.stages.generate import detect_device

    device = detect_device(config.engine)
    place_model(plan.model_source, device, bundled=config.model == model.BUNDLED_MODEL)
    if config.facts:
        # Facts for new or changed products first (one engine, then released),
        # so the generation passes and the gate see them.
        from factory.facts.extract import ensure_facts

        facts = ensure_facts(plan.products, resolve(config.facts, **config.storage_options()), config.engine,
                             plan.model_source, device, model_name=model.display_name(config.model),
                             cpu_stage_num_cpus=light)
        plan.products = attach_facts(plan.products, facts)
    lookups = {"users": ray.put(plan.users), "products": ray.put(plan.products)}

    # Pass 1 (CPU only): every pair checked, with the file and row it came
    # from. Bad pairs become dead letters; servable ones are staged, then
    # turned into the unique rows the run owes. Cheap, so a resumed attempt
    # redoes it (same input, same result).
    for loc in (attempt.dead_letters, attempt.checked):
        delete_dir_if_exists(loc)
    n_buckets = stage_buckets(plan)
    checked = checked_pairs(plan, lookups).map_batches(
        _route_checked, fn_kwargs={"run_id": config.run_id, "run_date": config.run_date,
                                   "campaign": config.campaign, "n_buckets": n_buckets},
        batch_format="pyarrow", num_cpus=light)
    buckets = {_bucket_name(b): Sink(attempt.checked.join(_bucket_name(b)), _staged_pair_shape)
               for b in range(n_buckets)}
    staged = _write(checked, {"dead_letters": Sink(attempt.dead_letters, dead_letters.shape,
                                                   footer.dead_letter_entries), **buckets}, light, route=C.ROUTE,
                    rows_per_file=pass1_batch_pairs(plan))
    servable = sum(w["rows"] for w in staged if w["sink"] != "dead_letters")
    if config.campaign and not sum(w["rows"] for w in staged):
        if state.action == "new":
            delete_dir_if_exists(attempt.base)  # nothing of a mistyped campaign is worth keeping
        raise ConfigError(f"--campaign {config.campaign}: no pair in {plan.pairs.loc.uri} has this campaign_id",
                          _campaigns_in(plan.pairs, light))
    _write_lookup_rejects(plan, attempt)
    owed = _stage_rows(plan, attempt, n_buckets, lookups["users"])
    expected = owed.rows
    staged_files = list_files(attempt.pairs, ".parquet")  # the rows to generate (identical prompts once)
    dead = read_footers(attempt.dead_letters)  # final once staged: what the summary and manifest list
    if sum(f.rows for f in dead):
        logger.warning("%d pair(s) sent to the dead letters at %s", sum(f.rows for f in dead),
                       attempt.dead_letters.uri)
    logger.info("%d servable pair(s) owe %d row(s)", servable, expected)

    # What an earlier process of this attempt already wrote is not generated again.
    written = _row_ids(attempt.copies)
    done = pa.chunked_array(written.chunks + _row_ids(attempt.repair_queue).chunks, pa.string())
    resumed = state.action == "resume"
    if len(done):
        logger.info("Resuming: %d of %d row(s) already written", len(done), expected)
    to_generate = (_count_missing(_row_ids(attempt.pairs), done) if len(done)
                   else sum(f["rows"] for f in _describe(attempt.pairs)))

    keys = [C.ROW_ID, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT, C.LOCALE, C.TEMPLATE_VERSION]
    finalize = FinalizeRows(config.run_id, config.run_date, model.display_name(config.model))
    # The review rows also go to the review queue, with the product facts beside them.
    copies = Sink(attempt.copies, finalize, footer.copies_entries,
                  beside=Sink(attempt.review, ReviewRows(lookups["products"])))
    generated = first_drafts = reused = 0
    progress = ProgressLog(expected, config.progress_every_seconds, already_done=len(written))
    with progress:
        # Pass 2: generate the rows not written yet (one per distinct prompt).
        if to_generate:
            progress.phase("first drafts")
            good = joined_dataset(plan, lookups, staged_files, attempt.pairs, to_generate + len(done),
                                  ray.put(done.combine_chunks()) if len(done) else None).map_batches(
                _keep_rows, fn_kwargs={"dead": False}, batch_format="pyarrow", num_cpus=light)
            rendered = good.map_batches(RenderPrompts(plan.templates, config.engine.max_tokens),
                                        batch_format="pyarrow", num_cpus=light)
            # The chat, its stops and the brand ride along for the repair pass's prompt.
            generate = build_generate_stage(config.engine, plan.model_source, device,
                                            keys + [C.MESSAGES, C.STOP, "brand"], light)
            first = _gate(generate(rendered), plan, lookups, attempt=1, counter=progress.counter)
            # A CPU engine sets the pace (factory/ray_session.py); a stand-in engine may not say.
            with engine_paced_scheduling(getattr(generate, "shares_cores_with_ray", False)):
                written = _write(first, {C.ROUTE_COPIES: copies,
                                         C.ROUTE_REPAIR: Sink(attempt.repair_queue, _repair_queue_rows)},
                                 light, route=C.ROUTE, rows_per_file=config.rows_per_file)
            generated = first_drafts = sum(w["rows"] for w in written)

        # Pass 3: one more draw for each rejected row, told why the first failed.
        # The queue may hold rows from an earlier process too; rows already
        # repaired into the copies are skipped.
        queued = [i.path for i in list_files(attempt.repair_queue, ".parquet")]
        missing, repaired = _still_owed(attempt.repair_queue, attempt.copies, resumed)
        if queued and missing:
            progress.phase("repair")
            logger.info("Repairing rejected rows from %d queue file(s)", len(queued))
            retry = ray.data.read_parquet(queued, filesystem=attempt.repair_queue.fs, num_cpus=light)
            if len(repaired):
                retry = _skip_rows(retry, repaired, light)
            retry = retry.map_batches(RenderRepair(), batch_format="pyarrow", num_cpus=light)
            engine = config.engine.model_copy(update={"temperature": config.quality.repair_temperature})
            regenerate = build_generate_stage(engine, plan.model_source, device,
                                              keys + [C.FIRST_ATTEMPT_REASONS], light)
            second = _gate(regenerate(retry), plan, lookups, attempt=2, counter=progress.counter)
            with engine_paced_scheduling(getattr(regenerate, "shares_cores_with_ray", False)):
                generated += sum(w["rows"] for w in _write(second, {C.ROUTE_COPIES: copies}, light,
                                                           rows_per_file=config.rows_per_file))

        # Pass 4: rows whose prompt equals a generated row's take its final
        # copy (after repair) and go through the gate on their own.
        followers = list_files(attempt.followers, ".parquet")
        if followers:
            missing, written_ids = _still_owed(attempt.followers, attempt.copies, resumed)
            if missing:
                progress.phase("reuse")
                reuse = ray.data.read_parquet([f.path for f in followers], filesystem=attempt.followers.fs,
                                              num_cpus=light)
                if len(written_ids):
                    reuse = _skip_rows(reuse, written_ids, light)
                # In the object store once for every ReuseCopy actor; the driver keeps no copy.
                leaders = ray.put(_leader_rows(attempt, followers))
                pa.default_memory_pool().release_unused()
                reuse = reuse.map_batches(ReuseCopy, fn_constructor_kwargs={"leaders": leaders},
                                          batch_format="pyarrow", num_cpus=light,
                                          compute=stage_pool(config))
                reused = sum(w["rows"] for w in _write(
                    _gate(reuse, plan, lookups, attempt=2, counter=progress.counter),
                    {C.ROUTE_COPIES: copies}, light, rows_per_file=config.rows_per_file))

    files = _check_exactly_once(attempt, owed)
    review = _settle_review_queue(plan, attempt, files)
    result = _summarize(plan, attempt, state.action, files, dead, time.time() - started, review)
    result.rows_generated, result.rows_resumed, result.rows_reused = generated, len(done), reused
    result.progress = progress.samples
    # Engine requests this process made: first drafts (rows not written
    # before it started) plus repairs; reused rows cost none. The manifest's
    # history keeps them.
    update_process(process, finished_at=_now(), rows_expected=expected, rows_resumed=len(done),
                   rows_generated=generated, first_drafts=first_drafts, repairs=generated - first_drafts,
                   rows_reused=reused)
    summary = _write_summary(plan, attempt, result, device)
    report_file = _write_report(plan, attempt, files, summary)
    _publish(plan, attempt, result, summary, device, dead, report_file)
    delete_dir_if_exists(attempt.work)
    return result


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat()


def _already_published(plan: Plan, attempt: Attempt, started: float) -> RunResult:
    manifest = json.loads(read_bytes(attempt.manifest))
    logger.info("Run %s is already published (attempt %d): %s. Nothing to do; --force runs it again as a "
                "new attempt.", plan.config.run_id, attempt.number, attempt.manifest.uri)
    return RunResult(
        run_id=manifest["run_id"], attempt=attempt.number, action="published", output_uri=attempt.base.uri,
        manifest_uri=attempt.manifest.uri, rows_written=manifest["rows"]["copies"],
        dead_letters=manifest["rows"]["dead_letters"], rows_by_channel=manifest["rows_by_channel"],
        dead_letters_by_reason=manifest.get("dead_letters_by_reason", {}), samples=[],
        seconds=round(time.time() - started, 1), files=manifest["files"]["copies"],
        quality={"status": manifest["rows_by_status"]},
    )


class _SkipRows:
    """Drops rows whose id is in ``ids`` (an object ref: sent once per actor)."""

    def __init__(self, ids):
        import ray

        self._ids = ray.get(ids) if isinstance(ids, ray.ObjectRef) else ids

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.filter(pc.invert(pc.is_in(batch[C.ROW_ID], value_set=self._ids)))


def _skip_rows(ds, ids: pa.Array, num_cpus: float):
    """``ds`` without the rows whose id is in ``ids`` (sent once to one actor)."""
    import ray

    return ds.map_batches(_SkipRows, fn_constructor_kwargs={"ids": ray.put(ids)},
                          batch_format="pyarrow", num_cpus=num_cpus,
                          compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1))


def _leader_rows(attempt: Attempt, followers: list) -> pa.Table:
    """The written rows that followers reuse (their final copies)."""
    wanted = pa.concat_tables([read_parquet(attempt.followers.join(f.base_name), columns=[C.DEDUP_OF])
                               for f in followers])[C.DEDUP_OF].unique()
    # Filtered while each file is decoded, batch by batch: the driver never
    # holds a whole copies file, only the leaders.
    keep = pc.field(C.ROW_ID).isin(wanted)
    return pa.concat_tables([read_parquet(attempt.copies.join(info.base_name), filters=keep)
                             for info in list_files(attempt.copies, ".parquet")])


def _row_ids(folder: Location) -> pa.ChunkedArray:
    """Row ids in the Parquet files under ``folder``: what is already written.
    Kept as Arrow: a Python list of a million ids costs the driver ~100 MB."""
    chunks = []
    for info in list_files(folder, ".parquet"):
        chunks.extend(read_parquet(folder.join(info.base_name), columns=[C.ROW_ID])[C.ROW_ID].chunks)
    return pa.chunked_array(chunks, pa.string())


def _written_among(ids: pa.ChunkedArray, folder: Location) -> tuple[int, pa.Array]:
    """How many of ``ids`` the Parquet files under ``folder`` lack, and the
    ones they hold. One file's row ids at a time, so the driver's memory
    follows ``ids`` (a repair queue, the followers), not a whole run's copies."""
    ids = ids.combine_chunks()
    found = np.zeros(len(ids), dtype=bool)
    if len(ids):
        for info in list_files(folder, ".parquet"):
            column = read_parquet(folder.join(info.base_name), columns=[C.ROW_ID])[C.ROW_ID]
            found |= pc.is_in(ids, value_set=column).to_numpy(zero_copy_only=False)
    return int((~found).sum()), pc.unique(ids.filter(pa.array(found)))


def _still_owed(folder: Location, copies: Location, resumed: bool) -> tuple[int, pa.Array]:
    """``_written_among`` for the rows of the files under ``folder`` (the
    repair queue, the followers). In a process that began the attempt no
    such row can be in the copies yet (the writer sends a row to one sink,
    and followers are written last), so it counts them from footers and
    reads no id; only a resumed process looks."""
    if not resumed:
        return sum(f.rows for f in read_footers(folder)), pa.array([], pa.string())
    return _written_among(_row_ids(folder), copies)


def _count_missing(ids: pa.ChunkedArray, present: pa.ChunkedArray) -> int:
    """How many of ``ids`` are not in ``present``."""
    if not len(ids):
        return 0
    if not len(present):
        return len(ids)
    return len(ids) - pc.sum(pc.is_in(ids, value_set=present.combine_chunks())).as_py()


def _describe(folder: Location) -> list[dict[str, Any]]:
    """Every Parquet file under ``folder``: name, rows, bytes (from footers)."""
    return [f.listing() for f in read_footers(folder)]


def _check_exactly_once(attempt: Attempt, owed: Fingerprint) -> list[Footer]:
    """Refuse to publish unless the copies hold every owed row exactly once;
    return the copy files' footers.

    The driver adds up each file's row-id fingerprint from its footer (a
    ranged read of a few KB), so its work grows with files, not rows. A file
    without one (written before fingerprints) has its row ids read instead."""
    files = read_footers(attempt.copies)
    written = sum((footer.fingerprint(f) for f in files), Fingerprint())
    if written != owed:
        raise IncompleteRun(
            f"{attempt.copies.uri}: {written.rows} row(s) written, {owed.rows} expected"
            + ("" if written.rows != owed.rows else ", but not the owed ones (some missing and as many duplicated)")
            + "; not publishing. Rerun the same command to resume the attempt.")
    return files


def _route_checked(batch: pa.Table, run_id: str, run_date, campaign: str | None, n_buckets: int) -> pa.Table:
    """Pass 1's rows for the writer: dead letters in their schema, servable
    pairs in the staged shape, routed to their product's staging bucket."""
    dead = batch.filter(pc.is_valid(batch[C.REASON]))
    good = batch.filter(pc.is_null(batch[C.REASON]))
    n = dead.num_rows
    dead_rows = dead_letters.rows(
        run_id, run_date, n,
        **{C.CAMPAIGN_ID: (dead[C.CAMPAIGN_ID] if C.CAMPAIGN_ID in dead.column_names
                           else pa.array([campaign] * n, pa.string()))},
        **{c: dead[c] for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.REASON, C.SOURCE, C.SOURCE_ROW)
           if c in dead.column_names})
    for name in (C.CHANNEL, C.CAMPAIGN_ID):
        if name not in good.column_names:
            good = good.append_column(name, pa.nulls(good.num_rows, pa.string()))
    staged = good.select(list(STAGED_PAIR_COLUMNS))
    dead_rows = dead_rows.append_column(C.ROUTE, pa.array(["dead_letters"] * n, pa.string()))
    bucket_names = pa.array([_bucket_name(b) for b in range(n_buckets)], pa.string())
    staged = staged.append_column(C.ROUTE, bucket_names.take(_product_buckets(staged[C.PRODUCT_ID], n_buckets)))
    return pa.concat_tables([dead_rows, staged], promote_options="default")


STAGED_ROW_COLUMNS = (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT)


def _stage_rows(plan: Plan, attempt: Attempt, n_buckets: int, users=None) -> Fingerprint:
    """Turn the checked pairs into the unique rows the run owes; return their
    fingerprint (``rows`` is how many).

    The same pair twice in the input, or a pair naming a channel that another
    pair for the same user and product already gets, would owe a row twice.
    The first pair in file order keeps each row; a pair left with nothing new
    goes to the dead letters as ``duplicate_pair``. Done from pass 1's output
    (keys only), so every process of an attempt stages the same rows.

    Pass 1 wrote the pairs split by a hash of the product, and everything
    staging decides (repeated pairs, identical prompts, rows sharing a prompt
    prefix) is about rows of one product, so each bucket is staged by its
    own Ray task, anywhere in the cluster; the driver adds up what they
    return. ``users`` is the users table or an object ref to it."""
    import ray

    config = plan.config
    for loc in (attempt.pairs, attempt.followers):
        delete_dir_if_exists(loc)
    users = ray.put(plan.users) if users is None else users
    stage = ray.remote(_stage_bucket_task).options(num_cpus=config.cpu_stage_num_cpus)
    pending = [stage.remote(attempt, b, config, plan.templates, users) for b in range(n_buckets)]
    owed = reused = done = 0
    fingerprint = Fingerprint()
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        rows, followers, owes = ray.get(ready[0])
        owed, reused, done = owed + rows, reused + followers, done + 1
        fingerprint += Fingerprint.parse(owes)
        if n_buckets > 1 and (done % max(1, n_buckets // 10) == 0 or not pending):
            logger.info("Staged %d of %d product bucket(s): %d row(s) so far", done, n_buckets, owed)
    delete_dir_if_exists(attempt.checked)
    if reused:
        logger.info("%d of %d row(s) have a prompt identical to an earlier row's: generated once, reused "
                    "(--no-dedup turns this off)", reused, owed)
    return fingerprint


# Pairs per staging bucket: what bounds one staging task's memory (measured
# at 1M pairs: +150 MiB for buckets of ~100k pairs).
STAGE_BUCKET_PAIRS = 100_000


# Pass 1 writes a file per writer batch and bucket, so the batch grows with
# the input: at most PASS1_BATCHES batches, so at most that many files per
# bucket (16k files in all at 50M pairs, not one per 50k pairs per bucket).
PASS1_BATCHES = 32
PASS1_MAX_BATCH_PAIRS = 2_000_000


def _input_pairs(plan: Plan) -> int:
    """The pairs the input holds (from its footers), or the --limit."""
    pairs = sum(n for path in plan.pairs.files for n in plan.pairs.row_groups.get(path, []))
    return pairs if plan.config.limit is None else min(pairs, plan.config.limit)


def stage_buckets(plan: Plan) -> int:
    """How many product buckets pass 1 splits the pairs into: about
    STAGE_BUCKET_PAIRS each, known before anything is read."""
    return max(1, -(-_input_pairs(plan) // STAGE_BUCKET_PAIRS))


def pass1_batch_pairs(plan: Plan) -> int:
    return min(PASS1_MAX_BATCH_PAIRS, max(ROWS_PER_FILE, -(-_input_pairs(plan) // PASS1_BATCHES)))


def _bucket_name(bucket: int) -> str:
    return f"bucket={bucket:05d}"


def _stage_bucket_task(attempt: Attempt, bucket: int, config: JobConfig, templates, users) -> tuple[int, int, str]:
    """A Ray task: stage one bucket's pairs; (rows, followers, owed fingerprint as text)."""
    folder = attempt.checked.join(_bucket_name(bucket))
    names = [i.base_name for i in list_files(folder, ".parquet")]
    pairs = (pa.concat_tables([read_parquet(folder.join(name)) for name in names])
             if names else STAGED_PAIR_SCHEMA.empty_table())
    keys = dedup.PromptKeys(users, templates) if config.dedup_prompts and pairs.num_rows else None
    rows, followers, owes = _stage_bucket(pairs, bucket, config, users, attempt, keys)
    return rows, followers, owes.text()


def _product_buckets(products: pa.ChunkedArray, n_buckets: int) -> pa.Array:
    """crc32(product id) mod n per row: the same in every process (unlike
    Python's hash), hashed once per distinct product."""
    if not len(products):
        return pa.array([], pa.int32())
    encoded = products.combine_chunks().dictionary_encode()
    per_value = np.array([zlib.crc32(v.encode()) % n_buckets if v is not None else 0
                          for v in encoded.dictionary.to_pylist()] + [0], dtype=np.int32)
    # A null product (never staged: pass 1 dead-letters it) goes to bucket 0.
    index = encoded.indices.fill_null(len(per_value) - 1).to_numpy(zero_copy_only=False)
    return pa.array(per_value[index])


def _stage_bucket(pairs: pa.Table, bucket: int, config: JobConfig, users: pa.Table, attempt: Attempt,
                  keys: dedup.PromptKeys | None) -> tuple[int, int, Fingerprint]:
    """Stage one bucket's pairs (see ``_stage_rows``): write its rows to
    generate, its followers and its duplicate pairs; return (rows, followers,
    the fingerprint of every row it owes)."""
    if pairs.num_rows:
        pairs = pairs.take(pc.sort_indices(pairs, sort_keys=[(C.SOURCE, "ascending"), (C.SOURCE_ROW, "ascending")]))
    owing = _fan_out_rows(pairs, config)
    # First occurrence of each (campaign, user, product, channel, variant) in file order keeps the row.
    first = owing.group_by([_CAMPAIGN, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT], use_threads=False) \
        .aggregate([(_INDEX, "min")])[f"{_INDEX}_min"]
    kept = owing.take(pc.take(first, pc.sort_indices(first)))  # in file order
    owing_pairs = pc.unique(owing[_POS])
    duplicates = owing_pairs.filter(pc.invert(pc.is_in(owing_pairs, value_set=pc.unique(kept[_POS]))))
    del owing

    rows = kept.select(list(STAGED_ROW_COLUMNS) + [_CAMPAIGN])
    rows = rows.take(dedup.prefix_cache_order(rows, users))
    owed = rows.num_rows
    # The row ids (as JoinProfiles makes them) let a resumed process see
    # which staged rows are still owed without running the join; the prompt
    # keys say which rows would send the engine the same prompt.
    ids = [row_id(config.run_id, *key) for key in zip(
        *(rows[c].to_pylist() for c in (_CAMPAIGN, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT)))]
    rows = rows.append_column(C.ROW_ID, pa.array(ids, pa.string()))
    owed_fingerprint = Fingerprint.of(ids)  # what the copies must add up to (_check_exactly_once)
    reused = 0
    if keys is not None and owed:
        resolved = rows.set_column(rows.column_names.index(C.CAMPAIGN_ID), C.CAMPAIGN_ID, rows[_CAMPAIGN])
        lead = dedup.leader_ids(rows[C.ROW_ID], pa.chunked_array([dedup.key_digests(keys(resolved))]))
        reuse = pc.is_valid(lead)
        followers = resolved.append_column(C.DEDUP_OF, lead).filter(reuse).drop_columns([_CAMPAIGN])
        rows = rows.filter(pc.invert(reuse))
        reused = followers.num_rows
        _write_chunks(attempt.followers, followers, f"part-{bucket:05d}")
    _write_chunks(attempt.pairs, rows.drop_columns([_CAMPAIGN]), f"part-{bucket:05d}")
    if len(duplicates):
        dup = pairs.take(duplicates)
        dead_letters.write(attempt.dead_letters.join(f"part-duplicate-pairs-{bucket:05d}.parquet"), dead_letters.rows(
            config.run_id, config.run_date, dup.num_rows,
            **{c: dup[c] for c in (C.CAMPAIGN_ID, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.SOURCE, C.SOURCE_ROW)},
            **{C.REASON: pa.array([dead_letters.DUPLICATE_PAIR] * dup.num_rows, pa.string())}))
    return owed, reused, owed_fingerprint


# Internal columns of the staging: the pair's position in file order, the
# row's position in fan-out order, and the campaign the row is keyed under.
_POS, _INDEX, _CAMPAIGN = "__pair", "__index", "__campaign"


def _fan_out_rows(pairs: pa.Table, config: JobConfig) -> pa.Table:
    """Every (pair, channel, variant) row the pairs (in file order) owe, in
    the order ``fan_out`` gives: a pair naming a channel of the run owes its
    variants; a pair naming none owes every channel's."""
    n, variants, channels = pairs.num_rows, config.variants, list(config.channels)
    positions = np.arange(n, dtype=np.int64)
    channel = pairs[C.CHANNEL]
    named = pc.fill_null(pc.is_in(channel, value_set=pa.array(channels, pa.string())), False).to_numpy(
        zero_copy_only=False)
    unnamed = pc.is_null(channel).to_numpy(zero_copy_only=False)
    parts = []
    for mask, owed in ((named, None), (unnamed, [(c, v) for c in channels for v in range(variants)])):
        pos = positions[mask]
        k = variants if owed is None else len(owed)
        take = np.repeat(pos, k)
        if owed is None:
            row_channel = channel.take(pa.array(take))
            row_variant = np.tile(np.arange(variants, dtype=np.int32), len(pos))
        else:
            row_channel = pa.array(np.tile(np.array([c for c, _ in owed], dtype=object), len(pos)), pa.string())
            row_variant = np.tile(np.array([v for _, v in owed], dtype=np.int32), len(pos))
        order = np.tile(np.arange(k, dtype=np.int64), len(pos))
        parts.append(pa.table({_POS: take, "__order": order, C.CHANNEL: row_channel,
                               C.VARIANT: pa.array(row_variant, pa.int32())}))
    rows = pa.concat_tables(parts)
    rows = rows.take(pc.sort_indices(rows, sort_keys=[(_POS, "ascending"), ("__order", "ascending")]))
    at = rows[_POS]
    campaign = pairs[C.CAMPAIGN_ID].take(at)
    resolved = (pa.array([config.campaign] * len(at), pa.string()) if config.campaign
                else pc.coalesce(campaign, pa.scalar("default", pa.string())))
    return pa.table({C.USER_ID: pairs[C.USER_ID].take(at), C.PRODUCT_ID: pairs[C.PRODUCT_ID].take(at),
                     C.CHANNEL: rows[C.CHANNEL], C.CAMPAIGN_ID: campaign, C.VARIANT: rows[C.VARIANT],
                     _CAMPAIGN: resolved, _POS: at, _INDEX: pa.array(np.arange(len(at), dtype=np.int64))})


def _write_chunks(folder: Location, rows: pa.Table, prefix: str = "part") -> None:
    for start in range(0, rows.num_rows, ROWS_PER_FILE):
        write_parquet(folder.join(f"{prefix}-{start // ROWS_PER_FILE:05d}.parquet"), rows.slice(start, ROWS_PER_FILE))


def _staged_pair_shape(rows: pa.Table) -> pa.Table:
    return rows.select(list(STAGED_PAIR_COLUMNS))


def _write_lookup_rejects(plan: Plan, attempt: Attempt) -> None:
    """Users and products rows the driver dropped (null, malformed or
    duplicate ids) go to the dead letters too, with their file and row."""
    config = plan.config
    rejects = [r for report in plan.table_reports for r in report.rejects]
    if not rejects:
        return
    n = len(rejects)
    table = dead_letters.rows(config.run_id, config.run_date, n, **{
        C.CAMPAIGN_ID: pa.array([config.campaign] * n, pa.string()),
        C.USER_ID: pa.array([r.get(C.USER_ID) for r in rejects], pa.string()),
        C.PRODUCT_ID: pa.array([r.get(C.PRODUCT_ID) for r in rejects], pa.string()),
        C.REASON: pa.array([r["reason"] for r in rejects], pa.string()),
        C.SOURCE: pa.array([r["source"] for r in rejects], pa.string()),
        C.SOURCE_ROW: pa.array([r["source_row"] for r in rejects], pa.int64()),
    })
    dead_letters.write(attempt.dead_letters.join("part-lookup-tables.parquet"), table)


def _gate(ds, plan: Plan, lookups: dict[str, Any], attempt: int, counter=None):

    return ds.map_batches(
        QualityGate,
        fn_constructor_kwargs=dict(products=lookups["products"], users=lookups["users"],
                                   policy=plan.config.quality, templates=plan.templates, attempt=attempt,
                                   counter=counter),
        batch_format="pyarrow", compute=stage_pool(plan.config),
        num_cpus=plan.config.cpu_stage_num_cpus,
    )


def _settle_review_queue(plan: Plan, attempt: Attempt, files: list[Footer]) -> dict[str, Any]:
    """Make the review queue hold exactly the copies' review rows: one file
    beside each copies file that has any, of the same name (the writer's
    ``Sink.beside``). A review file whose copies file was never written (a
    process killed in between) or was rewritten without review rows is
    deleted; a copies file whose review file is missing (written by an older
    release) has it rebuilt. Footers say how many rows each should hold."""
    owed = {f.file: (f, footer.file_stats(f).quality.status[C.REVIEW]) for f in files}
    for f in read_footers(attempt.review):
        if owed.get(f.file, (None, 0))[1] != f.rows:
            delete_file(f.loc)
    have = {f.file for f in read_footers(attempt.review)}
    rows_for_review = ReviewRows(plan.products)
    for name, (copies_file, n) in owed.items():
        if n and name not in have:
            write_parquet(attempt.review.join(name), rows_for_review(read_parquet(copies_file.loc)))
    queue = read_footers(attempt.review)
    rows = sum(f.rows for f in queue)
    if rows:
        logger.info("%d row(s) for review at %s", rows, attempt.review.uri)
    return {"rows": rows, "files": [{"path": f"review/{f.file}", "rows": f.rows, "bytes": f.size} for f in queue]}


def _summarize(plan: Plan, attempt: Attempt, action: str, files: list[Footer], dead: list[Footer],
               seconds: float, review: dict[str, Any]) -> RunResult:
    # Verdicts and engine work come from the files' footers (factory/footer.py):
    # the driver reads no row for them, whatever the run's size.
    stats = footer.copy_stats(files)
    quality = stats.quality.summary()
    quality["review_queue"] = review
    # Corpus figures need the text: read whole files (named by a hash of
    # their rows, so effectively in random order) until a sample is big enough.
    sample = _corpus_sample(files)
    corpus_rows = _read_columns(sample, CORPUS_COLUMNS)
    quality["corpus"] = corpus_figures(corpus_rows, plan.products, max_rows=CORPUS_SAMPLE_ROWS)
    quality["corpus"]["files_measured"] = f"{len(sample)} of {len(files)}"
    del corpus_rows
    by_reason = dict(footer.reason_counts(dead).most_common())
    # One accepted sample per channel from the head of the first file: cheap at any size.
    samples, seen = [], set()
    if files:
        head = read_parquet(files[0].loc).slice(0, 2_000)
        for row in head.to_pylist():
            if row[C.CHANNEL] not in seen and row[C.TEXT] and row[C.STATUS] == C.ACCEPTED:
                seen.add(row[C.CHANNEL])
                samples.append({k: row[k] for k in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.LOCALE, C.TEXT)})
    return RunResult(
        run_id=plan.config.run_id, attempt=attempt.number, action=action, output_uri=attempt.base.uri,
        manifest_uri=attempt.manifest.uri, rows_written=stats.quality.rows,
        dead_letters=sum(f.rows for f in dead), rows_by_channel=stats.quality.rows_by_channel(),
        dead_letters_by_reason=by_reason, samples=samples, seconds=round(seconds, 1),
        files=[{"path": f"copies/{f.file}", "rows": f.rows, "bytes": f.size} for f in files],
        quality=quality, work=stats.work.figures(),
    )


# Rows the corpus figures measure. A share measured on 100k rows is within
# +-0.3 points; the figures' working memory (about 2.5 KB a row, measured)
# stays the same whatever the run's size.
CORPUS_SAMPLE_ROWS = 100_000


def _corpus_sample(files: list[Footer]) -> list[Footer]:
    """Whole copy files, in listing order, until CORPUS_SAMPLE_ROWS rows."""
    sample, rows = [], 0
    for f in files:
        if rows >= CORPUS_SAMPLE_ROWS:
            break
        sample.append(f)
        rows += f.rows
    return sample
CORPUS_COLUMNS = (C.CHANNEL, C.USER_ID, C.PRODUCT_ID, C.TEXT, C.STATUS, C.NUMERIC_FIDELITY, C.COPY_LENGTH,
                  C.COPY_LENGTH_LIMIT)


def _read_columns(files: list[Footer], columns) -> pa.Table:
    """Some columns of written copy files: what a downstream reader will see."""
    from factory.stages.finalize import OUTPUT_SCHEMA

    schema = pa.schema([OUTPUT_SCHEMA.field(c) for c in columns])
    tables = [read_parquet(f.loc, columns=list(columns)) for f in files]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _write_summary(plan: Plan, attempt: Attempt, result: RunResult, device: str) -> dict[str, Any]:
    config = plan.config
    summary = {
        "run_id": result.run_id,
        "run_date": config.run_date.isoformat(),
        "campaign": config.campaign_label,
        "attempt": attempt.number,
        "output": result.output_uri,
        "rows_written": result.rows_written,
        "rows_by_channel": result.rows_by_channel,
        "rows_generated": result.rows_generated,
        "rows_resumed": result.rows_resumed,
        "rows_reused": result.rows_reused,
        "engine_work": result.work,
        "progress": result.progress,
        "quality": result.quality,
        "files": result.files,
        "dead_letters": result.dead_letters,
        "dead_letters_by_reason": result.dead_letters_by_reason,
        "input_tables": [{k: v for k, v in asdict(r).items() if k != "rejects"} for r in plan.table_reports],
        "template_versions": {c: t.version for c, t in plan.templates.items() if c in config.channels},
        "model": config.model,
        "device": device,
        "seconds": result.seconds,
        # Settings only: no credentials live in the config.
        "config": json.loads(config.model_dump_json()),
    }
    put_bytes(attempt.base.join(SUMMARY), json.dumps(summary, indent=2, ensure_ascii=False).encode(),
              content_type="application/json")
    return summary


def _write_report(plan: Plan, attempt: Attempt, files: list[Footer], summary: dict[str, Any]) -> str | None:
    """report.html beside summary.json, from the same bounded sample of files as
    the corpus figures. A report that cannot be written never fails a run: the
    data is published regardless."""
    try:
        copies = _read_columns(_corpus_sample(files), report.REPORT_COLUMNS)
        written = report.write_report(attempt.base, summary, copies, plan.products, summary.get("progress"))
    except Exception as exc:  # noqa: BLE001
        logger.warning("Run report not written: %s", exc)
        return None
    logger.info("Run report: %s", attempt.base.join(written["file"]).uri)
    return written["file"]


def _publish(plan: Plan, attempt: Attempt, result: RunResult, summary: dict[str, Any], device: str,
             dead: list[Footer], report_file: str | None = None) -> None:
    """The manifest (exclusively: one writer wins), then _SUCCESS, then the
    campaign's latest pointer. Until the manifest exists nothing of this
    attempt is visible to a reader that follows the contract."""
    config = plan.config
    review = result.quality["review_queue"]
    manifest = {
        "run_id": config.run_id,
        "run_date": config.run_date.isoformat(),
        "campaign": config.campaign_label,
        "attempt": attempt.number,
        "config_hash": config_hash(config.model_dump_json()),
        "template_versions": summary["template_versions"],
        "model": config.model,
        "device": device,
        "rows": {"copies": result.rows_written, "dead_letters": result.dead_letters, "review": review["rows"]},
        "rows_by_status": result.quality["status"],
        "rows_by_channel": result.rows_by_channel,
        "rows_by_channel_status": result.quality["status_by_channel"],
        "dead_letters_by_reason": result.dead_letters_by_reason,
        "files": {
            "copies": result.files,
            "dead_letters": [{"path": f"dead_letters/{f.file}", "rows": f.rows, "bytes": f.size} for f in dead],
            "review": review["files"],
        },
        "summary": SUMMARY,
        "report": report_file,
        "history": read_history(attempt),
        "abandoned_attempts": abandoned_attempts(plan.run, attempt.number),
        "published_at": _now(),
    }
    publish(attempt, manifest)
    relative = attempt.manifest.uri[len(plan.output.uri.rstrip("/")) + 1:]
    moved = update_latest(plan.output, config.campaign_label, {
        "run_id": config.run_id, "run_date": config.run_date.isoformat(), "attempt": attempt.number,
        "manifest": relative, "published_at": manifest["published_at"]})
    logger.info("Published %s (attempt %d): %s%s", config.run_id, attempt.number, attempt.manifest.uri,
                "" if moved else " (latest pointer left on a later run date)")
