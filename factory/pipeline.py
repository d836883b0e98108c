"""The nightly run: plan on the driver, then stream through the stages.

    prepare()  validate config, templates and inputs; read the lookup tables;
               resolve the model. No engine time is spent before this passes.
    run()      pass 1 (CPU only): pairs the tables cannot serve -> dead letters
               pass 2: join -> render -> generate -> quality gate -> copies
                       (rejected rows -> the repair queue instead)
               pass 3: repair queue -> render with the reasons -> generate
                       -> quality gate -> copies        (only if any were rejected)
               then:   review queue and run summary from what was written

Output layout under ``--output`` (Hive-style, so readers select by date and
campaign). The key is ``date=``, not ``run_date=``: the files carry a
``run_date`` column (a date), and a path key of the same name is inferred as
a string, which pandas and pyarrow readers refuse to merge with it.

    copies/date=YYYY-MM-DD/campaign=<name>/part-<digest of row keys>.parquet
    review/date=YYYY-MM-DD/campaign=<name>/review.parquet
    dead_letters/date=YYYY-MM-DD/campaign=<name>/part-<digest of row keys>.parquet
    runs/date=YYYY-MM-DD/campaign=<name>/summary.json
    _work/date=YYYY-MM-DD/campaign=<name>/repair/   (during the run only)
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
from factory.stages.write import Sink, WriteParquetFiles
from factory.storage import Location, delete_dir_if_exists, make_dirs, resolve

logger = logging.getLogger(__name__)

DEAD_LETTER_SCHEMA = pa.schema([
    (C.RUN_ID, pa.string()), (C.RUN_DATE, pa.date32()), (C.CAMPAIGN_ID, pa.string()),
    (C.USER_ID, pa.string()), (C.PRODUCT_ID, pa.string()), (C.CHANNEL, pa.string()),
    (C.REASON, pa.string()), (C.SOURCE, pa.string()),
])


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
    copies: Location
    dead_letters: Location
    runs: Location
    review: Location
    work: Location  # the repair queue lives here during the run
    model_source: str


@dataclass
class RunResult:
    run_id: str
    output_uri: str
    rows_written: int
    dead_letters: int
    rows_by_channel: dict[str, int]
    dead_letters_by_reason: dict[str, int]
    samples: list[dict[str, Any]]
    seconds: float
    files: list[dict[str, Any]] = field(default_factory=list)  # {sink, file, rows, bytes}
    quality: dict[str, Any] = field(default_factory=dict)


def _partition(base: Location, kind: str, config: JobConfig) -> Location:
    return base.join(kind, f"date={config.run_date.isoformat()}", f"campaign={config.campaign_label}")


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

    where = dict(s3_endpoint=config.s3_endpoint, s3_region=config.s3_region)
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
        copies=_partition(out, "copies", config), dead_letters=_partition(out, "dead_letters", config),
        runs=_partition(out, "runs", config), review=_partition(out, "review", config),
        work=_partition(out, "_work", config).join("repair"),
        model_source=model.resolve_model(config.model),
    )


ROWS_PER_FILE = 50_000
PAIRS_PER_BLOCK = 32
MAX_BLOCKS = 2_000


def _write(ds, sinks: dict[str, Sink], num_cpus: float, route: str | None = None) -> list[dict[str, Any]]:
    """Write ``ds`` to its sinks; return one {sink, file, rows, bytes} per file written."""
    written = ds.map_batches(WriteParquetFiles(sinks, route), batch_size=ROWS_PER_FILE,
                             batch_format="pyarrow", num_cpus=num_cpus)
    return sorted(written.take_all(), key=lambda r: (r["sink"], r["file"]))


# What the repair pass needs of a rejected row: its keys, its chat and why it failed.
REPAIR_QUEUE_COLUMNS = (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT, C.LOCALE,
                        C.TEMPLATE_VERSION, "brand", C.MESSAGES, C.MAX_TOKENS, C.STOP, C.REASONS,
                        C.REASON_DETAILS, C.COPY_LENGTH_LIMIT)


def _repair_queue_rows(batch: pa.Table) -> pa.Table:
    return batch.select(list(REPAIR_QUEUE_COLUMNS))


def _keep_rows(batch: pa.Table, dead: bool) -> pa.Table:
    mask = pc.is_valid(batch[C.REASON]) if dead else pc.is_null(batch[C.REASON])
    return batch.filter(mask)


def _dead_letter_rows(batch: pa.Table, run_id: str, run_date, source: str) -> pa.Table:
    n = batch.num_rows
    return pa.table({
        C.RUN_ID: pa.array([run_id] * n, pa.string()),
        C.RUN_DATE: pa.array([run_date] * n, pa.date32()),
        C.CAMPAIGN_ID: batch[C.CAMPAIGN_ID],
        C.USER_ID: batch[C.USER_ID],
        C.PRODUCT_ID: batch[C.PRODUCT_ID],
        C.CHANNEL: batch[C.CHANNEL],
        C.REASON: batch[C.REASON],
        C.SOURCE: pa.array([source] * n, pa.string()),
    }, schema=DEAD_LETTER_SCHEMA)


def _campaign_filter(batch: pa.Table, campaign: str) -> pa.Table:
    return batch.filter(pc.equal(batch[C.CAMPAIGN_ID], campaign))


def joined_dataset(plan: Plan, lookups: dict[str, Any]):
    """Pairs read, filtered and joined: the common head of both passes.

    ``lookups`` holds the users and products tables already in the object
    store, put there once for both passes."""
    import ray

    config = plan.config
    light = config.cpu_stage_num_cpus
    # Small blocks stream: the engine gets work as soon as the first blocks are
    # rendered, progress moves, finished rows leave memory early. Left to
    # itself Ray made one block per file and a whole file one engine task (seen:
    # no progress for minutes). Split at the read, not with repartition(): its
    # task asks for a whole CPU, which a 2-core node running an engine lacks.
    pairs = plan.pairs
    blocks = max(1, min(MAX_BLOCKS, -(-pairs.rows // PAIRS_PER_BLOCK)))
    ds = ray.data.read_parquet(pairs.files, filesystem=pairs.loc.fs, columns=pairs.columns,
                               override_num_blocks=blocks, num_cpus=light)
    if config.campaign and C.CAMPAIGN_ID in pairs.columns:
        ds = ds.map_batches(_campaign_filter, fn_kwargs={"campaign": config.campaign},
                            batch_format="pyarrow", num_cpus=light)
    if config.limit:
        ds = ds.limit(config.limit)
    return ds.map_batches(
        JoinProfiles,
        fn_constructor_kwargs=dict(
            **lookups, channels=config.channels,
            known_channels=list(plan.templates), variants=config.variants, campaign=config.campaign,
        ),
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_cpus=light,
    )


def run(config: JobConfig) -> RunResult:
    import ray

    started = time.time()
    plan = prepare(config)  # every check that can fail does so before Ray or the engine starts
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

    light = config.cpu_stage_num_cpus
    source = plan.pairs.loc.uri
    for loc in (plan.copies, plan.dead_letters, plan.runs, plan.review, plan.work):
        delete_dir_if_exists(loc)  # a rerun replaces the run's output

    lookups = {"users": ray.put(plan.users), "products": ray.put(plan.products)}

    # Pass 1 (CPU only): pairs the lookup tables cannot serve.
    dead = (joined_dataset(plan, lookups)
            .map_batches(_keep_rows, fn_kwargs={"dead": True}, batch_format="pyarrow", num_cpus=light)
            .map_batches(_dead_letter_rows, fn_kwargs={"run_id": config.run_id, "run_date": config.run_date,
                                                        "source": source},
                         batch_format="pyarrow", num_cpus=light))
    dead_files = _write(dead, {"dead_letters": Sink(plan.dead_letters.fs, plan.dead_letters.path)}, light)
    dead_reasons = _read_column(plan.dead_letters, dead_files, C.REASON)
    if len(dead_reasons):
        logger.warning("%d pair(s) sent to the dead letters at %s", len(dead_reasons), plan.dead_letters.uri)

    # Pass 2: generate.
    from factory.stages.generate import detect_device

    device = detect_device(config.engine)
    good = joined_dataset(plan, lookups).map_batches(_keep_rows, fn_kwargs={"dead": False}, batch_format="pyarrow",
                                            num_cpus=light)
    rendered = good.map_batches(RenderPrompts(plan.templates, config.engine.max_tokens),
                                batch_format="pyarrow", num_cpus=light)
    keys = [C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT, C.LOCALE, C.TEMPLATE_VERSION]
    finalize = FinalizeRows(config.run_id, config.run_date, model.display_name(config.model))
    copies = Sink(plan.copies.fs, plan.copies.path, finalize)

    # The chat, its stops and the brand ride along for the repair pass's prompt.
    generate = build_generate_stage(config.engine, plan.model_source, device,
                                    keys + [C.MESSAGES, C.STOP, "brand"], light)
    first = _gate(generate(rendered), plan, lookups, attempt=1)
    files = _write(first, {C.ROUTE_COPIES: copies,
                           C.ROUTE_REPAIR: Sink(plan.work.fs, plan.work.path, _repair_queue_rows)},
                   light, route=C.ROUTE)

    # Pass 3: one more draw for each rejected row, told why the first failed.
    queued = [plan.work.join(f["file"]).path for f in files if f["sink"] == C.ROUTE_REPAIR]
    if queued:
        queued_rows = sum(f["rows"] for f in files if f["sink"] == C.ROUTE_REPAIR)
        logger.info("Repairing %d rejected row(s)", queued_rows)
        retry = (ray.data.read_parquet(queued, filesystem=plan.work.fs, num_cpus=light,
                                       override_num_blocks=max(1, min(MAX_BLOCKS, -(-queued_rows // PAIRS_PER_BLOCK))))
                 .map_batches(RenderRepair(), batch_format="pyarrow", num_cpus=light))
        engine = config.engine.model_copy(update={"temperature": config.quality.repair_temperature})
        regenerate = build_generate_stage(engine, plan.model_source, device,
                                          keys + [C.FIRST_ATTEMPT_REASONS], light)
        second = _gate(regenerate(retry), plan, lookups, attempt=2)
        files = [f for f in files if f["sink"] != C.ROUTE_REPAIR] + _write(second, {C.ROUTE_COPIES: copies}, light)
    delete_dir_if_exists(plan.work)

    review = _write_review_queue(plan, files)
    result = _summarize(plan, files, dead_reasons, time.time() - started, review)
    _write_summary(plan, result, device)
    return result


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


def _write_review_queue(plan: Plan, written: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows with status ``review``, with the product facts beside the copy, in
    one small Parquet file a reviewer can open in any tool."""
    tables = [pq.read_table(plan.copies.join(w["file"]).path, filesystem=plan.copies.fs,
                            filters=[(C.STATUS, "=", C.REVIEW)])
              for w in written if w["sink"] == C.ROUTE_COPIES]
    rows = pa.concat_tables(tables) if tables else None
    if rows is None or rows.num_rows == 0:
        return {"rows": 0, "file": None}
    keep = [c for c in (C.CAMPAIGN_ID, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.LOCALE, C.VARIANT, C.TEXT,
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
    target = plan.review.join("review.parquet")
    make_dirs(plan.review.fs, plan.review.path)
    pq.write_table(review, target.path, filesystem=plan.review.fs, compression="zstd")
    logger.info("%d row(s) for review at %s", review.num_rows, target.uri)
    return {"rows": review.num_rows, "file": target.uri}


def _summarize(plan: Plan, written: list[dict[str, Any]], dead_reasons: pa.ChunkedArray, seconds: float,
               review: dict[str, Any]) -> RunResult:
    copies = [w for w in written if w["sink"] == C.ROUTE_COPIES]
    verdicts = _read_columns(plan.copies, copies, VERDICT_COLUMNS)
    quality = quality_summary(verdicts)
    quality["review_queue"] = review
    # Corpus figures need the text: read whole files (named by content hash,
    # so effectively in random order) until a sample is big enough.
    sample, rows = [], 0
    for w in copies:
        if rows >= CORPUS_SAMPLE_ROWS:
            break
        sample.append(w)
        rows += w["rows"]
    corpus_rows = _read_columns(plan.copies, sample, CORPUS_COLUMNS)
    quality["corpus"] = corpus_figures(corpus_rows, plan.products, max_rows=CORPUS_SAMPLE_ROWS)
    quality["corpus"]["files_measured"] = f"{len(sample)} of {len(copies)}"

    by_channel = dict(zip(*_value_counts(verdicts[C.CHANNEL])))
    by_reason = dict(zip(*_value_counts(dead_reasons)))
    # One accepted sample per channel from the head of the first file: cheap at any size.
    samples, seen = [], set()
    if copies:
        first = plan.copies.join(copies[0]["file"]).path
        head = next(pq.ParquetFile(first, filesystem=plan.copies.fs).iter_batches(batch_size=2_000), None)
        for row in (head.to_pylist() if head is not None else []):
            if row[C.CHANNEL] not in seen and row[C.TEXT] and row[C.STATUS] == C.ACCEPTED:
                seen.add(row[C.CHANNEL])
                samples.append({k: row[k] for k in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.LOCALE, C.TEXT)})
    return RunResult(
        run_id=plan.config.run_id, output_uri=plan.copies.uri, rows_written=verdicts.num_rows,
        dead_letters=len(dead_reasons), rows_by_channel=by_channel, dead_letters_by_reason=by_reason,
        samples=samples, seconds=round(seconds, 1), files=copies, quality=quality,
    )


CORPUS_SAMPLE_ROWS = 200_000
CORPUS_COLUMNS = (C.CHANNEL, C.USER_ID, C.PRODUCT_ID, C.TEXT, C.STATUS, C.NUMERIC_FIDELITY, C.COPY_LENGTH,
                  C.COPY_LENGTH_LIMIT)


def _read_columns(loc: Location, written: list[dict[str, Any]], columns) -> pa.Table:
    """Some columns of the files a write produced: what a downstream reader will see."""
    from factory.stages.finalize import OUTPUT_SCHEMA

    schema = pa.schema([OUTPUT_SCHEMA.field(c) for c in columns])
    tables = [pq.read_table(loc.join(w["file"]).path, filesystem=loc.fs, columns=list(columns)) for w in written]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _read_column(loc: Location, written: list[dict[str, Any]], column: str) -> pa.ChunkedArray:
    """One column of the files a write produced: what a downstream reader will see."""
    return pa.chunked_array([pq.read_table(loc.join(w["file"]).path, filesystem=loc.fs, columns=[column])[column]
                             for w in written], pa.string())


def _value_counts(column) -> tuple[list, list]:
    if len(column) == 0:
        return [], []
    counts = pc.value_counts(column)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def _write_summary(plan: Plan, result: RunResult, device: str) -> None:
    config = plan.config
    summary = {
        "run_id": result.run_id,
        "run_date": config.run_date.isoformat(),
        "campaign": config.campaign_label,
        "output": result.output_uri,
        "rows_written": result.rows_written,
        "rows_by_channel": result.rows_by_channel,
        "quality": result.quality,
        "files": result.files,
        "dead_letters": result.dead_letters,
        "dead_letters_by_reason": result.dead_letters_by_reason,
        "input_tables": [asdict(r) for r in plan.table_reports],
        "template_versions": {c: t.version for c, t in plan.templates.items() if c in config.channels},
        "model": config.model,
        "device": device,
        "seconds": result.seconds,
        # Settings only: no credentials live in the config.
        "config": json.loads(config.model_dump_json()),
    }
    make_dirs(plan.runs.fs, plan.runs.path)
    with plan.runs.fs.open_output_stream(plan.runs.join("summary.json").path) as f:
        f.write(json.dumps(summary, indent=2, ensure_ascii=False).encode())
