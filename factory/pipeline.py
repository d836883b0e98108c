"""The nightly run: plan on the driver, then stream through the stages.

    prepare()  validate config, templates and inputs; read the lookup tables;
               resolve the model. No engine time is spent before this passes.
    run()      pass 1 (CPU only): pairs the tables cannot serve -> dead letters
               pass 2: join -> render -> generate -> finalize -> Parquet

Output layout under ``--output`` (Hive-style, so readers select by date and
campaign):

    copies/run_date=YYYY-MM-DD/campaign=<name>/part-<digest of row keys>.parquet
    dead_letters/run_date=YYYY-MM-DD/campaign=<name>/part-<digest of row keys>.parquet
    runs/run_date=YYYY-MM-DD/campaign=<name>/summary.json
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
from factory.stages import FinalizeRows, JoinProfiles, RenderPrompts, build_generate_stage
from factory.stages.write import WriteParquetFiles
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
    files: list[dict[str, Any]] = field(default_factory=list)  # {file, rows, bytes}


def _partition(base: Location, kind: str, config: JobConfig) -> Location:
    return base.join(kind, f"run_date={config.run_date.isoformat()}", f"campaign={config.campaign_label}")


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
        runs=_partition(out, "runs", config),
        model_source=model.resolve_model(config.model),
    )


ROWS_PER_FILE = 50_000
PAIRS_PER_BLOCK = 32
MAX_BLOCKS = 2_000


def _write(ds, loc: Location, num_cpus: float) -> list[dict[str, Any]]:
    """Write ``ds`` under ``loc``; return one {file, rows, bytes} per file written."""
    written = ds.map_batches(WriteParquetFiles(loc.fs, loc.path), batch_size=ROWS_PER_FILE,
                             batch_format="pyarrow", num_cpus=num_cpus)
    return sorted(written.take_all(), key=lambda r: r["file"])


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
    for loc in (plan.copies, plan.dead_letters, plan.runs):
        delete_dir_if_exists(loc)  # a rerun replaces the run's output

    lookups = {"users": ray.put(plan.users), "products": ray.put(plan.products)}

    # Pass 1 (CPU only): pairs the lookup tables cannot serve.
    dead = (joined_dataset(plan, lookups)
            .map_batches(_keep_rows, fn_kwargs={"dead": True}, batch_format="pyarrow", num_cpus=light)
            .map_batches(_dead_letter_rows, fn_kwargs={"run_id": config.run_id, "run_date": config.run_date,
                                                        "source": source},
                         batch_format="pyarrow", num_cpus=light))
    dead_files = _write(dead, plan.dead_letters, light)
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
    passthrough = [C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT, C.LOCALE, C.TEMPLATE_VERSION]
    generate = build_generate_stage(config.engine, plan.model_source, device, passthrough, light)
    final = generate(rendered).map_batches(
        FinalizeRows(config.run_id, config.run_date, model.display_name(config.model)),
        batch_format="pyarrow", num_cpus=light,
    )
    files = _write(final, plan.copies, light)

    result = _summarize(plan, files, dead_reasons, time.time() - started)
    _write_summary(plan, result, device)
    return result


def _summarize(plan: Plan, written: list[dict[str, Any]], dead_reasons: pa.ChunkedArray, seconds: float) -> RunResult:
    files = [plan.copies.join(w["file"]).path for w in written]
    channels = _read_column(plan.copies, written, C.CHANNEL)
    by_channel = dict(zip(*_value_counts(channels)))
    by_reason = dict(zip(*_value_counts(dead_reasons)))
    # One sample per channel from the head of the first file: cheap at any size.
    samples, seen = [], set()
    if files:
        head = next(pq.ParquetFile(files[0], filesystem=plan.copies.fs).iter_batches(batch_size=2_000), None)
        for row in (head.to_pylist() if head is not None else []):
            if row[C.CHANNEL] not in seen and row[C.TEXT]:
                seen.add(row[C.CHANNEL])
                samples.append({k: row[k] for k in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.LOCALE, C.TEXT)})
    return RunResult(
        run_id=plan.config.run_id, output_uri=plan.copies.uri, rows_written=len(channels),
        dead_letters=len(dead_reasons), rows_by_channel=by_channel, dead_letters_by_reason=by_reason,
        samples=samples, seconds=round(seconds, 1), files=written,
    )


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
