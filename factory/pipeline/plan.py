"""Planning, on the driver, before Ray or an engine starts: the config's
templates, the inputs' schemas and footers, the products table, the model and
every store checked; then which pairs the run is about (its scope) and how
its work is cut into blocks, files and actor pools. The users table, which
grows with the audience, is read and checked on Ray once it is up
(``load_users``): the driver holds a reference, never the rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory import inputs, model, sample_data
from factory.cluster import stage_actors
from factory.config import JobConfig
from factory.errors import UsageError
from factory.facts.extract import NO_FACTS, attach_facts
from factory.lookup import KeyIndex
from factory.preflight import check_engine_kwargs, check_place
from factory.prompts import PromptTemplate, apply_campaign, load_templates
from factory.ray_session import deref
from factory.storage import Location, read_parquet_part, resolve

logger = logging.getLogger(__name__)


class ConfigError(UsageError):
    """A setting that cannot work; raised on the driver before the engine starts."""


@dataclass
class Plan:
    """What prepare() checked and resolved, handed to run()."""

    config: JobConfig
    templates: dict[str, PromptTemplate]
    pairs: inputs.ParquetInput
    users_input: inputs.ParquetInput  # checked schema; its rows are read on Ray (load_users)
    products: pa.Table
    table_reports: list[inputs.TableReport]
    output: Location
    run: Location  # runs/date=D/campaign=C: the run's attempts live here
    model_source: str
    judge_model_source: str  # the judge's model (--judge-model), else the run's
    experiment: Any = None  # a PlannedExperiment (factory/pipeline/experiment.py) when the campaign has one
    # Set by load_users: object refs to the checked users table and, with
    # --locales, to the ids of the users whose locale the run does not write;
    # and how many users the table holds.
    users: Any = None
    locale_excluded: Any = None
    users_rows: int = 0


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
    users = inputs.check_schema(resolve(users_uri, **where), inputs.USERS)
    products, products_report = inputs.read_lookup_table(
        resolve(products_uri, **where), inputs.PRODUCTS, C.PRODUCT_ID
    )
    products_report.log()

    out = resolve(config.output, **where)
    model_source = model.resolve_model(config.model, where)

    # What the prompts and the faithfulness rule call the product's facts: the
    # catalog's selling points until run() swaps in extracted ones (--facts).
    products = attach_facts(products, NO_FACTS)
    return Plan(
        config=config,
        templates=templates,
        pairs=pairs,
        users_input=users,
        products=products,
        table_reports=[products_report],  # load_users puts the users' report first
        output=out,
        run=run_location(out, config),
        model_source=model_source,
        judge_model_source=model.resolve_model(config.judge_model, where)
        if config.judge_model
        else model_source,
        experiment=planned_experiment,
    )


def load_users(plan: Plan) -> None:
    """Read and check the users table in a Ray task, after Ray is up: at
    millions of users it was the driver's largest object (benchmarks/RESULTS.md
    section 14). The table stays in the object store; the driver gets its
    report (rows kept, what was dropped and where) and the count of users
    outside ``--locales``. Sets ``plan.users`` and ``plan.locale_excluded``."""
    import ray

    config = plan.config
    read = ray.remote(_read_users).options(num_returns=3, num_cpus=config.cpu_stage_num_cpus)
    plan.users, excluded, report = read.remote(plan.users_input.loc, config.locales)
    try:
        report, n_excluded = ray.get(report)
    except ray.exceptions.RayTaskError as exc:  # a file that cannot be read: its own clear error
        raise (exc.cause if isinstance(exc.cause, UsageError) else exc) from None
    report.log()
    plan.table_reports.insert(0, report)
    plan.users_rows = report.rows_kept
    plan.locale_excluded = excluded if n_excluded else None
    if config.locales is not None:
        logger.info(
            "Locales %s: %d of %d user(s) are out of scope",
            ", ".join(config.locales),
            n_excluded,
            report.rows_kept,
        )


def _read_users(loc: Location, locales: list[str] | None):
    """``load_users``'s task: the checked table, the ids of the users whose
    locale the run does not write (or None) and (report, how many ids)."""
    from factory.config import locale_allowed

    users, report = inputs.read_lookup_table(loc, inputs.USERS, C.USER_ID)
    if locales is None:
        return users, None, (report, 0)
    # A handful of distinct locales: each is judged once, then matched as a column.
    distinct = pc.unique(users[C.LOCALE]).to_pylist()
    allowed = pa.array([v for v in distinct if locale_allowed(v, locales)], pa.string())
    written = pc.is_in(users[C.LOCALE], value_set=allowed, skip_nulls=not locale_allowed(None, locales))
    excluded = users[C.USER_ID].filter(pc.invert(pc.fill_null(written, False))).combine_chunks()
    return users, excluded, (report, len(excluded))


def users_named(plan: Plan, user_ids: list[str]) -> pa.Table:
    """The checked users with these ids (a sample's few), taken on Ray: the
    driver never holds the whole table."""
    import ray

    return ray.get(ray.remote(_take_users).remote(plan.users, pa.array(user_ids, pa.string())))


def _take_users(users: pa.Table, user_ids: pa.Array) -> pa.Table:
    return users.filter(pc.is_in(users[C.USER_ID], value_set=user_ids))


def users_on_driver(plan: Plan) -> pa.Table:
    """The whole checked users table in this process: for benchmarks and
    tools at sample size, never the run (``load_users``)."""
    if plan.users is not None:
        return deref(plan.users)
    users, _ = inputs.read_lookup_table(plan.users_input.loc, inputs.USERS, C.USER_ID)
    return users


def prompt_stages(plan: Plan):
    """The run's join and render stages, built as the run builds them, to call
    on the driver without Ray: ``render(join(pairs))`` are the prompts the
    engine would get (the benchmarks compare contenders on exactly these)."""
    from factory.stages import JoinProfiles, RenderPrompts

    config = plan.config
    return (
        JoinProfiles(
            users_on_driver(plan),
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


# Appended by ``InScope(mark_excluded=True)`` (the dry run counts these pairs instead of dropping them).
LOCALE_EXCLUDED_COLUMN = "__locale_excluded"


class InScope:
    """The pairs this run is about: its campaign, the users and products it
    names, users whose locale it writes. Pairs outside are not this run's
    business (not dead letters); unknown ids still reach the checks.

    The id sets are indexed once per actor: ``pc.is_in`` hashes its whole
    value set on every call (1M excluded users: 130 CPU-ms per 10k-pair
    block, against 20 ms looked up in an index built once in 248 ms;
    ``benchmarks/scope_lookup.py``, RESULTS section 16). Ids are compared
    as bytes: these rows are not checked yet, and a broken key must not stop
    the block. ``mark_excluded`` keeps the other locales' pairs, flagged in
    LOCALE_EXCLUDED_COLUMN."""

    def __init__(
        self, campaign=None, user_ids=None, product_ids=None, excluded_users=None, mark_excluded=False
    ):
        def index(values) -> KeyIndex | None:
            values = deref(values)
            return (
                None
                if values is None
                else KeyIndex(pc.unique(pa.array(values, pa.string()).cast(pa.binary())))
            )

        self._campaign = campaign
        self._within = [(C.USER_ID, index(user_ids)), (C.PRODUCT_ID, index(product_ids))]
        self._excluded = index(excluded_users)
        self._mark_excluded = mark_excluded

    def __call__(self, batch: pa.Table) -> pa.Table:
        keep = np.ones(batch.num_rows, dtype=bool)
        if self._campaign and C.CAMPAIGN_ID in batch.column_names:
            keep &= pc.fill_null(pc.equal(batch[C.CAMPAIGN_ID], self._campaign), False).to_numpy()
        for column, index in self._within:
            if index is not None:
                keep &= self._found(index, batch[column])
        excluded = (
            self._found(self._excluded, batch[C.USER_ID])
            if self._excluded is not None
            else np.zeros(batch.num_rows, dtype=bool)
        )
        if self._mark_excluded:
            return batch.filter(pa.array(keep)).append_column(
                LOCALE_EXCLUDED_COLUMN, pa.array(excluded[keep])
            )
        return batch.filter(pa.array(keep & ~excluded))

    @staticmethod
    def _found(index: KeyIndex, ids) -> np.ndarray:
        return pc.is_valid(index.positions(ids.cast(pa.binary()))).to_numpy(zero_copy_only=False)


def scope(plan: Plan) -> dict[str, Any]:
    """Arguments of ``InScope``; empty when the run takes every pair.
    Needs ``load_users`` first (the locales' excluded users are its ref)."""
    config = plan.config
    ids = {"user_ids": config.user_ids, "product_ids": config.product_ids}
    found = {
        "campaign": config.campaign,
        **{k: pa.array(v, pa.string()) if v is not None else None for k, v in ids.items()},
        "excluded_users": plan.locale_excluded,
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
                    column = read_parquet_part(pairs.loc.fs, path, group, [C.CAMPAIGN_ID])[
                        C.CAMPAIGN_ID
                    ].to_pylist()
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
