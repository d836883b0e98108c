"""The nightly run: plan on the driver, then stream through the stages.

    prepare()  validate config, templates and inputs; read the lookup tables;
               resolve the model. No engine time is spent before this passes.
    run()      pick the attempt: nothing to do if the run is published, else
               resume the unfinished attempt or start a new one
               pass 1 (CPU only): pairs the tables cannot serve -> dead letters;
                       the good rows are counted (what the run must deliver)
               pass 2: join -> skip rows already written -> render -> generate
                       -> quality gate -> copies (rejected rows -> repair queue)
               pass 3: repair queue -> render with the reasons -> generate
                       -> quality gate -> copies        (only if any were rejected)
               then:   review queue, checks (every row exactly once), summary,
                       and last the manifest, _SUCCESS and the latest pointer

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
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory import columns as C
from factory import inputs, model, sample_data
from factory.config import JobConfig
from factory.prompts import PromptTemplate, load_templates
from factory.quality.metrics import corpus_figures
from factory.quality.summary import VERDICT_COLUMNS, quality_summary
from factory.stages import FinalizeRows, JoinProfiles, QualityGate, RenderPrompts, RenderRepair, build_generate_stage
from factory.stages.check import CheckPairs, ReadPairs
from factory.stages.join import fan_out
from factory.stages.write import Sink, WriteParquetFiles
from factory.publish import (SUMMARY, Attempt, abandoned_attempts, choose_attempt, config_hash, publish, read_history,
                             record_process, update_latest, update_process)
from factory.storage import (Location, delete_dir_if_exists, list_files, put_bytes, read_bytes, read_parquet,
                             resolve, retry_io, write_parquet)

logger = logging.getLogger(__name__)

DEAD_LETTER_SCHEMA = pa.schema([
    (C.RUN_ID, pa.string()), (C.RUN_DATE, pa.date32()), (C.CAMPAIGN_ID, pa.string()),
    (C.USER_ID, pa.string()), (C.PRODUCT_ID, pa.string()), (C.CHANNEL, pa.string()),
    (C.REASON, pa.string()), (C.SOURCE, pa.string()), (C.SOURCE_ROW, pa.int64()),
])
# What pass 1 keeps of a servable pair for the generation passes.
STAGED_PAIR_COLUMNS = (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.SOURCE, C.SOURCE_ROW)


class ConfigError(ValueError):
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


class IncompleteRun(RuntimeError):
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


def run_location(output: Location, config: JobConfig) -> Location:
    return output.join("runs", f"date={config.run_date.isoformat()}", f"campaign={config.campaign_label}")


def prepare(config: JobConfig) -> Plan:
    templates = load_templates(config.templates)
    unknown = [c for c in config.channels if c not in templates]
    if unknown:
        raise ConfigError(f"--channels: no template for {', '.join(unknown)} (have: {', '.join(sorted(templates))})")

    if config.uses_sample_data:
        folder = model.cache_root() / "sample_data"
        paths = sample_data.generate(folder)
        logger.info("Using the bundled sample data in %s", folder)
        pairs_uri, users_uri, products_uri = paths.pairs, paths.users, paths.products
    else:
        pairs_uri, users_uri, products_uri = config.pairs, config.users, config.products

    where = dict(s3_endpoint=config.s3_endpoint, s3_region=config.s3_region, s3_sse=config.s3_sse,
                 s3_sse_kms_key_id=config.s3_sse_kms_key_id, s3_max_attempts=config.s3_max_attempts)
    pairs = inputs.check_schema(resolve(pairs_uri, **where), inputs.PAIRS)
    users, users_report = inputs.read_lookup_table(resolve(users_uri, **where), inputs.USERS, C.USER_ID)
    products, products_report = inputs.read_lookup_table(resolve(products_uri, **where), inputs.PRODUCTS, C.PRODUCT_ID)

    out = resolve(config.output, **where)
    if out.is_s3:
        bucket = out.path.split("/")[0]
        info = out.fs.get_file_info(bucket)
        if info.type.name != "Directory":
            raise ConfigError(f"--output {config.output}: bucket {bucket!r} does not exist or is not reachable")

    return Plan(
        config=config, templates=templates, pairs=pairs,
        users=users, products=products, table_reports=[users_report, products_report],
        output=out, run=run_location(out, config),
        model_source=model.resolve_model(config.model),
    )


ROWS_PER_FILE = 50_000
PAIRS_PER_BLOCK = 32
MAX_BLOCKS = 2_000


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


def _campaign_filter(batch: pa.Table, campaign: str) -> pa.Table:
    return batch.filter(pc.equal(batch[C.CAMPAIGN_ID], campaign))


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
    if config.campaign and C.CAMPAIGN_ID in pairs.columns:
        ds = ds.map_batches(_campaign_filter, fn_kwargs={"campaign": config.campaign},
                            batch_format="pyarrow", num_cpus=light)
    return ds.map_batches(
        CheckPairs,
        fn_constructor_kwargs=dict(**lookups, known_channels=list(plan.templates)),
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_cpus=light,
    )


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
    blocks = max(1, min(MAX_BLOCKS, -(-pair_count // PAIRS_PER_BLOCK)))
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
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_cpus=light,
    )


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

    if not ray.is_initialized():
        # Under `ray job submit` this joins the cluster; otherwise it starts a local Ray.
        ray.init(log_to_driver=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    # The V2 Parquet reader lists files in a task that always asks for a whole
    # CPU; once the engine actor holds its CPU on a small node that task never
    # schedules (seen on 2 cores: the run hangs at "ListFiles 0/1"). The V1
    # reader honours num_cpus, and the driver has listed the files already.
    ctx.use_datasource_v2 = False
    process = record_process(attempt, state.action, {"config_hash": config_hash(config.model_dump_json())})

    light = config.cpu_stage_num_cpus
    lookups = {"users": ray.put(plan.users), "products": ray.put(plan.products)}

    # Pass 1 (CPU only): every pair checked, with the file and row it came
    # from. Bad pairs become dead letters; servable ones are staged, then
    # turned into the unique rows the run owes. Cheap, so a resumed attempt
    # redoes it (same input, same result).
    for loc in (attempt.dead_letters, attempt.pairs):
        delete_dir_if_exists(loc)
    checked = checked_pairs(plan, lookups).map_batches(
        _route_checked, fn_kwargs={"run_id": config.run_id, "run_date": config.run_date,
                                   "campaign": config.campaign},
        batch_format="pyarrow", num_cpus=light)
    staged = _write(checked, {"dead_letters": Sink(attempt.dead_letters, _dead_letter_shape),
                              "pairs": Sink(attempt.pairs, _staged_pair_shape)}, light, route=C.ROUTE)
    _write_lookup_rejects(plan, attempt)
    expected = _stage_rows(plan, attempt)
    staged_files = list_files(attempt.pairs, ".parquet")
    dead_reasons = _read_column(attempt.dead_letters, _describe(attempt.dead_letters), C.REASON)
    if len(dead_reasons):
        logger.warning("%d pair(s) sent to the dead letters at %s", len(dead_reasons), attempt.dead_letters.uri)
    logger.info("%d servable pair(s) owe %d row(s)", sum(w["rows"] for w in staged if w["sink"] == "pairs"),
                expected)

    # What an earlier process of this attempt already wrote is not generated again.
    done = _row_ids(attempt.copies) + _row_ids(attempt.repair_queue)
    if done:
        logger.info("Resuming: %d of %d row(s) already written", len(done), expected)

    # Pass 2: generate.
    from factory.stages.generate import detect_device

    device = detect_device(config.engine)
    pair_count = expected
    keys = [C.ROW_ID, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT, C.LOCALE, C.TEMPLATE_VERSION]
    finalize = FinalizeRows(config.run_id, config.run_date, model.display_name(config.model))
    copies = Sink(attempt.copies, finalize)
    generated = first_drafts = 0
    if len(done) < expected:
        good = joined_dataset(plan, lookups, staged_files, attempt.pairs, pair_count,
                              ray.put(pa.array(done, pa.string())) if done else None).map_batches(
            _keep_rows, fn_kwargs={"dead": False}, batch_format="pyarrow", num_cpus=light)
        rendered = good.map_batches(RenderPrompts(plan.templates, config.engine.max_tokens),
                                    batch_format="pyarrow", num_cpus=light)
        # The chat, its stops and the brand ride along for the repair pass's prompt.
        generate = build_generate_stage(config.engine, plan.model_source, device,
                                        keys + [C.MESSAGES, C.STOP, "brand"], light)
        first = _gate(generate(rendered), plan, lookups, attempt=1)
        written = _write(first, {C.ROUTE_COPIES: copies,
                                 C.ROUTE_REPAIR: Sink(attempt.repair_queue, _repair_queue_rows)},
                         light, route=C.ROUTE, rows_per_file=config.rows_per_file)
        generated = first_drafts = sum(w["rows"] for w in written)

    # Pass 3: one more draw for each rejected row, told why the first failed.
    # The queue may hold rows from an earlier process too; rows already
    # repaired into the copies are skipped.
    queued = [i.path for i in list_files(attempt.repair_queue, ".parquet")]
    repaired = _row_ids(attempt.copies) if queued else []
    if queued and set(_row_ids(attempt.repair_queue)) - set(repaired):
        logger.info("Repairing rejected rows from %d queue file(s)", len(queued))
        retry = ray.data.read_parquet(queued, filesystem=attempt.repair_queue.fs, num_cpus=light)
        if repaired:
            retry = retry.map_batches(_SkipRows, fn_constructor_kwargs={"ids": ray.put(pa.array(repaired, pa.string()))},
                                      batch_format="pyarrow", num_cpus=light,
                                      compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1))
        retry = retry.map_batches(RenderRepair(), batch_format="pyarrow", num_cpus=light)
        engine = config.engine.model_copy(update={"temperature": config.quality.repair_temperature})
        regenerate = build_generate_stage(engine, plan.model_source, device,
                                          keys + [C.FIRST_ATTEMPT_REASONS], light)
        second = _gate(regenerate(retry), plan, lookups, attempt=2)
        generated += sum(w["rows"] for w in _write(second, {C.ROUTE_COPIES: copies}, light,
                                                   rows_per_file=config.rows_per_file))

    files = _check_exactly_once(attempt, expected)
    review = _write_review_queue(plan, attempt, files)
    result = _summarize(plan, attempt, state.action, files, dead_reasons, time.time() - started, review)
    result.rows_generated, result.rows_resumed = generated, len(done)
    # Engine requests this process made: first drafts (rows not written
    # before it started) plus repairs. The manifest's history keeps them.
    update_process(process, finished_at=_now(), rows_expected=expected, rows_resumed=len(done),
                   rows_generated=generated, first_drafts=first_drafts, repairs=generated - first_drafts)
    summary = _write_summary(plan, attempt, result, device)
    _publish(plan, attempt, result, summary, device)
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


def _row_ids(folder: Location) -> list[str]:
    """Row ids in the Parquet files under ``folder``: what is already written."""
    ids: list[str] = []
    for info in list_files(folder, ".parquet"):
        ids.extend(read_parquet(folder.join(info.base_name), columns=[C.ROW_ID])[C.ROW_ID].to_pylist())
    return ids


def _describe(folder: Location) -> list[dict[str, Any]]:
    """Every Parquet file under ``folder``: name, rows (from its footer), bytes."""
    out = []
    for info in list_files(folder, ".parquet"):
        rows = read_parquet(folder.join(info.base_name), columns=[]).num_rows
        out.append({"file": info.base_name, "rows": rows, "bytes": info.size})
    return out


def _check_exactly_once(attempt: Attempt, expected: int) -> list[dict[str, Any]]:
    """Refuse to publish unless every expected row is written exactly once;
    return the copy files (name, rows, bytes) from the same single read."""
    ids: list[str] = []
    files = []
    for info in list_files(attempt.copies, ".parquet"):
        file_ids = read_parquet(attempt.copies.join(info.base_name), columns=[C.ROW_ID])[C.ROW_ID].to_pylist()
        ids.extend(file_ids)
        files.append({"file": info.base_name, "rows": len(file_ids), "bytes": info.size})
    unique = len(set(ids))
    if unique != len(ids) or len(ids) != expected:
        raise IncompleteRun(
            f"{attempt.copies.uri}: {len(ids)} row(s) written ({len(ids) - unique} duplicate), {expected} expected; "
            "not publishing. Rerun the same command to resume the attempt.")
    return files


def _route_checked(batch: pa.Table, run_id: str, run_date, campaign: str | None) -> pa.Table:
    """Pass 1's rows for the writer: dead letters in their schema, servable
    pairs in the staged shape."""
    dead = batch.filter(pc.is_valid(batch[C.REASON]))
    good = batch.filter(pc.is_null(batch[C.REASON]))
    n = dead.num_rows
    dead_rows = _dead_letters(
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
    staged = staged.append_column(C.ROUTE, pa.array(["pairs"] * staged.num_rows, pa.string()))
    return pa.concat_tables([dead_rows, staged], promote_options="default")


DUPLICATE_PAIR = "duplicate_pair"
STAGED_ROW_COLUMNS = (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT)


def _stage_rows(plan: Plan, attempt: Attempt) -> int:
    """Turn the checked pairs into the unique rows the run owes; return how many.

    The same pair twice in the input, or a pair naming a channel that another
    pair for the same user and product already gets, would owe a row twice.
    The first pair in file order keeps each row; a pair left with nothing new
    goes to the dead letters as ``duplicate_pair``. Done on the driver from
    pass 1's output (keys only), so every process of an attempt stages the
    same rows."""
    config = plan.config
    files = list_files(attempt.pairs, ".parquet")
    pairs = (pa.concat_tables([read_parquet(attempt.pairs.join(f.base_name)) for f in files])
             if files else pa.table({c: pa.array([], pa.string()) for c in STAGED_PAIR_COLUMNS}))
    order = pc.sort_indices(pairs, sort_keys=[(C.SOURCE, "ascending"), (C.SOURCE_ROW, "ascending")]) \
        if pairs.num_rows else pa.array([], pa.int64())
    cols = {c: pairs[c].to_pylist() for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID)}
    seen: set[tuple] = set()
    out: dict[str, list] = {c: [] for c in STAGED_ROW_COLUMNS}
    duplicates = []
    for i in order.to_pylist():
        campaign = config.campaign or cols[C.CAMPAIGN_ID][i] or "default"
        fresh, owed = 0, fan_out(cols[C.CHANNEL][i], config.channels, config.variants)
        for channel, variant in owed:
            key = (campaign, cols[C.USER_ID][i], cols[C.PRODUCT_ID][i], channel, variant)
            if key in seen:
                continue
            seen.add(key)
            fresh += 1
            for name, value in zip(STAGED_ROW_COLUMNS, (cols[C.USER_ID][i], cols[C.PRODUCT_ID][i], channel,
                                                         cols[C.CAMPAIGN_ID][i], variant)):
                out[name].append(value)
        if owed and not fresh:  # (a pair for a channel this run does not write owes nothing)
            duplicates.append(i)
    delete_dir_if_exists(attempt.pairs)
    rows = pa.table({**{c: pa.array(out[c], pa.string()) for c in STAGED_ROW_COLUMNS if c != C.VARIANT},
                     C.VARIANT: pa.array(out[C.VARIANT], pa.int32())}).select(list(STAGED_ROW_COLUMNS))
    for start in range(0, rows.num_rows, ROWS_PER_FILE):
        write_parquet(attempt.pairs.join(f"part-{start // ROWS_PER_FILE:05d}.parquet"),
                      rows.slice(start, ROWS_PER_FILE))
    if duplicates:
        dup = pairs.take(pa.array(duplicates, pa.int64()))
        n = dup.num_rows
        write_parquet(attempt.dead_letters.join("part-duplicate-pairs.parquet"), _dead_letters(
            config.run_id, config.run_date, dup.num_rows,
            **{c: dup[c] for c in (C.CAMPAIGN_ID, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.SOURCE, C.SOURCE_ROW)},
            **{C.REASON: pa.array([DUPLICATE_PAIR] * dup.num_rows, pa.string())}))
    return rows.num_rows


def _dead_letters(run_id: str, run_date, n: int, **columns) -> pa.Table:
    """``n`` dead-letter rows in DEAD_LETTER_SCHEMA: run provenance added,
    absent columns null."""
    values = {C.RUN_ID: pa.array([run_id] * n, pa.string()), C.RUN_DATE: pa.array([run_date] * n, pa.date32()),
              **columns}
    return pa.table([values[f.name] if f.name in values else pa.nulls(n, f.type) for f in DEAD_LETTER_SCHEMA],
                    schema=DEAD_LETTER_SCHEMA)


def _dead_letter_shape(rows: pa.Table) -> pa.Table:
    return rows.select(DEAD_LETTER_SCHEMA.names).cast(DEAD_LETTER_SCHEMA)


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
    table = _dead_letters(config.run_id, config.run_date, n, **{
        C.CAMPAIGN_ID: pa.array([config.campaign] * n, pa.string()),
        C.USER_ID: pa.array([r.get(C.USER_ID) for r in rejects], pa.string()),
        C.PRODUCT_ID: pa.array([r.get(C.PRODUCT_ID) for r in rejects], pa.string()),
        C.REASON: pa.array([r["reason"] for r in rejects], pa.string()),
        C.SOURCE: pa.array([r["source"] for r in rejects], pa.string()),
        C.SOURCE_ROW: pa.array([r["source_row"] for r in rejects], pa.int64()),
    })
    write_parquet(attempt.dead_letters.join("part-lookup-tables.parquet"), table)


def _gate(ds, plan: Plan, lookups: dict[str, Any], attempt: int):
    import ray

    return ds.map_batches(
        QualityGate,
        fn_constructor_kwargs=dict(products=lookups["products"], users=lookups["users"],
                                   policy=plan.config.quality, templates=plan.templates, attempt=attempt),
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2),
        num_cpus=plan.config.cpu_stage_num_cpus,
    )


# Beside each copy under review, what a reviewer checks it against.
REVIEW_PRODUCT_COLUMNS = ("title", "brand", "category", "price", "currency", "description", "attributes",
                          "selling_points")
REVIEW_DESCRIPTION_CHARS = 1_000


def _write_review_queue(plan: Plan, attempt: Attempt, files: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows with status ``review``, with the product facts beside the copy, in
    one small Parquet file a reviewer can open in any tool."""
    tables = [read_parquet(attempt.copies.join(f["file"]), filters=[(C.STATUS, "=", C.REVIEW)]) for f in files]
    rows = pa.concat_tables(tables) if tables else None
    if rows is None or rows.num_rows == 0:
        return {"rows": 0, "file": None}
    keep = [c for c in (C.ROW_ID, C.CAMPAIGN_ID, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.LOCALE, C.VARIANT, C.TEXT,
                        C.REASONS, C.REASON_DETAILS, C.ATTEMPT, C.FIRST_ATTEMPT_REASONS, C.NUMERIC_FIDELITY,
                        C.COPY_LENGTH, C.COPY_LENGTH_LIMIT, C.TEMPLATE_VERSION, C.RUN_ID)]
    products = plan.products.select([C.PRODUCT_ID] + [c for c in REVIEW_PRODUCT_COLUMNS
                                                      if c in plan.products.column_names])
    if "description" in products.column_names:
        cut = pc.utf8_slice_codeunits(products["description"], 0, REVIEW_DESCRIPTION_CHARS)
        products = products.set_column(products.column_names.index("description"), "description", cut)
    # index_in + take, not Table.join: Acero cannot carry the list columns.
    facts = products.take(pc.index_in(rows[C.PRODUCT_ID], value_set=products[C.PRODUCT_ID]))
    review = rows.select(keep)
    for name in facts.column_names[1:]:
        review = review.append_column(name, facts[name])
    review = review.sort_by([(C.CHANNEL, "ascending"), (C.PRODUCT_ID, "ascending"), (C.USER_ID, "ascending")])
    target = attempt.review.join("review.parquet")
    size = write_parquet(target, review)
    logger.info("%d row(s) for review at %s", review.num_rows, target.uri)
    return {"rows": review.num_rows, "file": "review/review.parquet", "bytes": size}


def _summarize(plan: Plan, attempt: Attempt, action: str, files: list[dict[str, Any]],
               dead_reasons: pa.ChunkedArray, seconds: float, review: dict[str, Any]) -> RunResult:
    verdicts = _read_columns(attempt.copies, files, VERDICT_COLUMNS)
    quality = quality_summary(verdicts)
    quality["review_queue"] = review
    # Corpus figures need the text: read whole files (named by a hash of
    # their rows, so effectively in random order) until a sample is big enough.
    sample, rows = [], 0
    for f in files:
        if rows >= CORPUS_SAMPLE_ROWS:
            break
        sample.append(f)
        rows += f["rows"]
    corpus_rows = _read_columns(attempt.copies, sample, CORPUS_COLUMNS)
    quality["corpus"] = corpus_figures(corpus_rows, plan.products, max_rows=CORPUS_SAMPLE_ROWS)
    quality["corpus"]["files_measured"] = f"{len(sample)} of {len(files)}"

    by_channel = dict(zip(*_value_counts(verdicts[C.CHANNEL])))
    by_reason = dict(zip(*_value_counts(dead_reasons)))
    # One accepted sample per channel from the head of the first file: cheap at any size.
    samples, seen = [], set()
    if files:
        head = read_parquet(attempt.copies.join(files[0]["file"])).slice(0, 2_000)
        for row in head.to_pylist():
            if row[C.CHANNEL] not in seen and row[C.TEXT] and row[C.STATUS] == C.ACCEPTED:
                seen.add(row[C.CHANNEL])
                samples.append({k: row[k] for k in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.LOCALE, C.TEXT)})
    return RunResult(
        run_id=plan.config.run_id, attempt=attempt.number, action=action, output_uri=attempt.base.uri,
        manifest_uri=attempt.manifest.uri, rows_written=verdicts.num_rows,
        dead_letters=len(dead_reasons), rows_by_channel=by_channel, dead_letters_by_reason=by_reason,
        samples=samples, seconds=round(seconds, 1),
        files=[{"path": f"copies/{f['file']}", "rows": f["rows"], "bytes": f["bytes"]} for f in files],
        quality=quality,
    )


CORPUS_SAMPLE_ROWS = 200_000
CORPUS_COLUMNS = (C.CHANNEL, C.USER_ID, C.PRODUCT_ID, C.TEXT, C.STATUS, C.NUMERIC_FIDELITY, C.COPY_LENGTH,
                  C.COPY_LENGTH_LIMIT)


def _read_columns(loc: Location, written: list[dict[str, Any]], columns) -> pa.Table:
    """Some columns of the files a write produced: what a downstream reader will see."""
    from factory.stages.finalize import OUTPUT_SCHEMA

    schema = pa.schema([OUTPUT_SCHEMA.field(c) for c in columns])
    tables = [read_parquet(loc.join(w["file"]), columns=list(columns)) for w in written]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _read_column(loc: Location, written: list[dict[str, Any]], column: str) -> pa.ChunkedArray:
    """One column of the files a write produced: what a downstream reader will see."""
    return pa.chunked_array([read_parquet(loc.join(w["file"]), columns=[column])[column] for w in written],
                            pa.string())


def _value_counts(column) -> tuple[list, list]:
    if len(column) == 0:
        return [], []
    counts = pc.value_counts(column)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


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


def _publish(plan: Plan, attempt: Attempt, result: RunResult, summary: dict[str, Any], device: str) -> None:
    """The manifest (exclusively: one writer wins), then _SUCCESS, then the
    campaign's latest pointer. Until the manifest exists nothing of this
    attempt is visible to a reader that follows the contract."""
    config = plan.config
    dead_files = _describe(attempt.dead_letters)
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
            "dead_letters": [{"path": f"dead_letters/{f['file']}", "rows": f["rows"], "bytes": f["bytes"]}
                             for f in dead_files],
            "review": ([{"path": review["file"], "rows": review["rows"], "bytes": review["bytes"]}]
                       if review["file"] else []),
        },
        "summary": SUMMARY,
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
