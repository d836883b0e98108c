"""Planning, on the driver, before Ray or an engine starts: the config's
templates, the inputs' schemas and footers, the lookup tables, the model and
every store checked; then which pairs the run is about (its scope) and how
its work is cut into blocks, files and actor pools."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory import columns as C
from factory import inputs, model, sample_data
from factory.cluster import stage_actors
from factory.config import JobConfig
from factory.errors import UsageError
from factory.facts.extract import NO_FACTS, attach_facts
from factory.preflight import check_engine_kwargs, check_place
from factory.prompts import PromptTemplate, apply_campaign, load_templates
from factory.storage import Location, resolve, retry_io

logger = logging.getLogger(__name__)


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
    judge_model_source: str  # the judge's model (--judge-model), else the run's
    experiment: Any = None  # a PlannedExperiment (factory/pipeline/experiment.py) when the campaign has one


def run_location(output: Location, config: JobConfig) -> Location:
    return output.join("runs", f"date={config.run_date.isoformat()}", f"campaign={config.campaign_label}")


def prepare(config: JobConfig) -> Plan:
    from factory.pipeline import experiment

    templates = load_templates(config.templates)
    unknown = [c for c in config.channels if c not in templates]
    if unknown:
        raise ConfigError(
            f"--channels: no template for {', '.join(unknown)} (have: {', '.join(sorted(templates))})"
        )
    # The campaign's brand voice and declared offers go into every system
    # prompt (and so into the template versions).
    planned_experiment = experiment.resolve(config, templates)  # each arm's templates and meaning
    templates = apply_campaign(
        templates, config.brand_voice, [o.text for o in config.offers], config.channels
    )

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
    check_place(config.feedback, "--feedback", where)
    check_engine_kwargs(config.engine.engine_kwargs)
    pairs = inputs.check_schema(resolve(pairs_uri, **where), inputs.PAIRS)
    users, users_report = inputs.read_lookup_table(resolve(users_uri, **where), inputs.USERS, C.USER_ID)
    products, products_report = inputs.read_lookup_table(
        resolve(products_uri, **where), inputs.PRODUCTS, C.PRODUCT_ID
    )

    out = resolve(config.output, **where)
    model_source = model.resolve_model(config.model, where)

    # What the prompts and the faithfulness rule call the product's facts: the
    # catalog's selling points until run() swaps in extracted ones (--facts).
    products = attach_facts(products, NO_FACTS)
    return Plan(
        config=config,
        templates=templates,
        pairs=pairs,
        users=users,
        products=products,
        table_reports=[users_report, products_report],
        output=out,
        run=run_location(out, config),
        model_source=model_source,
        judge_model_source=model.resolve_model(config.judge_model, where)
        if config.judge_model
        else model_source,
        experiment=planned_experiment,
    )


def prompt_stages(plan: Plan):
    """The run's join and render stages, built as the run builds them, to call
    on the driver without Ray: ``render(join(pairs))`` are the prompts the
    engine would get (the benchmarks compare contenders on exactly these)."""
    from factory.stages import JoinProfiles, RenderPrompts

    config = plan.config
    return (
        JoinProfiles(
            plan.users,
            plan.products,
            config.channels,
            list(plan.templates),
            config.variants,
            config.campaign,
            config.run_id,
        ),
        RenderPrompts(plan.templates, config.engine.max_tokens),
    )


# --------------------------------------------------------------------------- the run's scope


def scope_filter(batch: pa.Table, campaign: str | None, user_ids, product_ids, excluded_users) -> pa.Table:
    """The pairs this run is about: its campaign, the users and products it
    names, users whose locale it writes. Pairs outside are not this run's
    business (not dead letters); unknown ids still reach the checks."""
    mask = (
        pc.equal(batch[C.CAMPAIGN_ID], campaign) if campaign and C.CAMPAIGN_ID in batch.column_names else None
    )
    for column, values, keep in (
        (C.USER_ID, user_ids, True),
        (C.PRODUCT_ID, product_ids, True),
        (C.USER_ID, excluded_users, False),
    ):
        if values is None:
            continue
        hit = pc.is_in(batch[column], value_set=values)
        hit = hit if keep else pc.invert(hit)
        mask = hit if mask is None else pc.and_(mask, hit)
    return batch if mask is None else batch.filter(pc.fill_null(mask, False))


def scope(plan: Plan) -> dict[str, Any]:
    """Arguments of ``scope_filter``; empty when the run takes every pair."""
    from factory.config import locale_allowed

    config = plan.config
    ids = {"user_ids": config.user_ids, "product_ids": config.product_ids}
    excluded = None
    if config.locales is not None:
        users = plan.users
        excluded = [
            u
            for u, loc in zip(users[C.USER_ID].to_pylist(), users[C.LOCALE].to_pylist())
            if not locale_allowed(loc, config.locales)
        ]
        logger.info(
            "Locales %s: %d of %d user(s) are out of scope",
            ", ".join(config.locales),
            len(excluded),
            users.num_rows,
        )
    found = {
        "campaign": config.campaign,
        **{k: pa.array(v, pa.string()) if v is not None else None for k, v in ids.items()},
        "excluded_users": pa.array(excluded, pa.string()) if excluded else None,
    }
    return found if any(v is not None for v in found.values()) else {}


def row_group_items(
    pairs: inputs.ParquetInput, limit: int | None, campaign: str | None
) -> list[dict[str, Any]]:
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
                    column = retry_io(
                        # Called at once, inside this iteration: the loop variables are the current ones.
                        lambda: (
                            pq.ParquetFile(path, filesystem=pairs.loc.fs)  # noqa: B023
                            .read_row_group(group, columns=[C.CAMPAIGN_ID])[C.CAMPAIGN_ID]  # noqa: B023
                            .to_pylist()
                        )
                    )
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


def input_pairs(plan: Plan) -> int:
    """The pairs the input holds (from its footers), or the --limit."""
    pairs = sum(n for path in plan.pairs.files for n in plan.pairs.row_groups.get(path, []))
    return pairs if plan.config.limit is None else min(pairs, plan.config.limit)


# --------------------------------------------------------------------------- how the work is cut

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


# Rows per partition of a Ray Data hash join (resume's anti joins, reuse's
# leaders): each partition is one aggregator's share, so this bounds its memory.
JOIN_PARTITION_ROWS = 500_000


def join_partitions(rows: int) -> int:
    """Partitions of a hash join over ``rows`` rows: enough that each holds
    about JOIN_PARTITION_ROWS, and no more than the cluster's CPUs (every
    partition is an aggregator actor)."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1
    return max(1, min(max(1, cpus), -(-rows // JOIN_PARTITION_ROWS)))
