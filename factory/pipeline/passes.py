"""The generation passes, declared as data and run by one loop.

    first drafts  staged rows not written yet -> join -> render -> generate
                  -> gate -> copies (rejected rows -> the repair queue)
    repair        the repair queue -> render with the reasons -> generate
                  -> gate -> copies
    reuse         rows whose prompt equals a generated row's -> that row's
                  final copy -> gate -> copies

With ``--candidates K`` (K > 1) a candidates pass comes first: staged rows
-> join -> render -> K draws -> generate -> gate -> ``_work/candidates``;
the first-drafts pass then keeps each owed row's best draw
(factory/candidates.py says how and why).

Each pass is a source (read when the pass starts: a later pass reads what an
earlier one wrote, and a pass with nothing owed starts no engine), stages
(``Dataset -> Dataset``, in order) and sinks. Rows already written by an
earlier process of the attempt are skipped (``factory.pipeline.resume``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from factory import candidates as cand
from factory import columns as C
from factory import footer, model
from factory.pipeline import resume
from factory.pipeline.plan import MAX_BLOCKS, Plan, join_partitions, rows_per_block, stage_pool
from factory.pipeline.staging import read, write
from factory.publish import Attempt
from factory.ray_session import engine_paced_scheduling
from factory.stages import (
    FinalizeRows,
    JoinProfiles,
    QualityGate,
    RenderPrompts,
    RenderRepair,
    build_generate_stage,
)
from factory.stages.generate import concurrent_batches
from factory.stages.judge import build_judge_stage
from factory.stages.reuse import reuse_copy
from factory.stages.review import ReviewRows
from factory.stages.write import Sink

Stage = Callable[[Any], Any]  # Dataset -> Dataset


@dataclass
class Pass:
    """One generation pass: where its rows come from, what they go through,
    where they are written."""

    name: str  # its progress phase, and its key in the rows each pass wrote
    source: Callable[[], Any]  # a Dataset, or None when the pass owes nothing
    stages: Sequence[Stage]
    sinks: dict[str, Sink]
    route: Optional[str] = None  # the column naming each row's sink, with several sinks


def run_passes(passes: Sequence[Pass], progress, num_cpus: float, rows_per_file: int) -> dict[str, int]:
    """Run each pass that owes rows, in order; return the rows each wrote."""
    written = {}
    for p in passes:
        ds = p.source()
        if ds is None:
            continue
        progress.phase(p.name)
        for stage in p.stages:
            ds = stage(ds)
        # A CPU engine sets the pace (factory/ray_session.py).
        with engine_paced_scheduling(any(getattr(s, "shares_cores_with_ray", False) for s in p.stages)):
            files = write(ds, p.sinks, num_cpus, route=p.route, rows_per_file=rows_per_file)
        written[p.name] = sum(f["rows"] for f in files)
    return written


# --------------------------------------------------------------------------- the three passes

# What every generated row carries through the engine stage: its keys, and
# its user's profile, which the gate and the judge read (factory/stages/users.py).
ROW_KEYS = [*C.ROW_KEY, C.LOCALE, C.TEMPLATE_VERSION, *C.USERS_LIST_FIELDS]
# What the repair pass needs of a rejected row: its keys, its chat and why it failed.
REPAIR_QUEUE_COLUMNS = (
    *ROW_KEYS,
    "brand",
    C.MESSAGES,
    C.MAX_TOKENS,
    C.STOP,
    C.REASONS,
    C.REASON_DETAILS,
    C.COPY_LENGTH_LIMIT,
)


@dataclass
class RunContext:
    """What every pass of one process shares."""

    plan: Plan
    attempt: Attempt
    products: Any  # an object ref of the products table
    device: str
    resumed: bool  # whether an earlier process of the attempt wrote rows (resume.remaining)
    counter: Any = None  # the progress counter the gate bumps
    copies: Sink = field(init=False)

    def __post_init__(self):
        config = self.plan.config
        finalize = FinalizeRows(config.run_id, config.run_date, model.display_name(config.model))
        # The review rows also go to the review queue, with the product facts beside them.
        self.copies = Sink(
            self.attempt.copies,
            finalize,
            footer.copies_entries,
            beside=Sink(self.attempt.review, ReviewRows(self.products)),
        )

    @property
    def light(self) -> float:
        return self.plan.config.cpu_stage_num_cpus

    @property
    def arm_templates(self) -> dict:
        """Per experiment arm, its templates (empty without an experiment)."""
        return self.plan.experiment.arm_templates if self.plan.experiment else {}

    @property
    def arm_sampling(self) -> dict:
        """Per experiment arm, its first drafts' sampling; the repair draws at the repair temperature."""
        return self.plan.experiment.arm_sampling if self.plan.experiment else {}

    @property
    def every_template(self) -> dict:
        """The run's templates and every arm's: the gate knows all their wording."""
        arms = {f"{arm}/{channel}": t for arm, ts in self.arm_templates.items() for channel, t in ts.items()}
        return {**self.plan.templates, **arms}


def generation_passes(ctx: RunContext) -> list[Pass]:
    """The passes of one run, in order. With ``--judge`` each generation pass
    holds its gated rows under ``_work/judge/<pass>/`` and a judge pass
    follows it: the judge's engine starts once the generation's is gone (a
    small node has no room for two), and reads rows written whole (read
    twice by the judge stage, they are not generated twice)."""
    config, attempt = ctx.plan.config, ctx.attempt
    repair_engine = config.engine.model_copy(update={"temperature": config.quality.repair_temperature})
    repair_queue = Sink(attempt.repair_queue, _repair_queue_rows)
    first_sinks = {C.ROUTE_COPIES: ctx.copies, C.ROUTE_REPAIR: repair_queue}
    render = _map(RenderPrompts(ctx.plan.templates, config.engine.max_tokens, ctx.arm_templates), ctx)
    # The chat, its stops and the brand ride along for the repair pass's prompt.
    first_keys = ROW_KEYS + [C.MESSAGES, C.STOP, "brand"]
    drawing = []
    if config.candidates > 1:
        drawing = [
            Pass(
                "candidates",
                source=lambda: _first_drafts(ctx, also=[candidates_folder(attempt)]),
                stages=[
                    render,
                    _map(
                        functools.partial(
                            cand.draw_candidates, candidates=config.candidates, copies=config.variants
                        ),
                        ctx,
                    ),
                    Generate(config.engine, ctx, first_keys + [cand.CANDIDATE], ctx.arm_sampling),
                    _gate(ctx, draft=1, counted=False),  # a row is finished once chosen
                    _map(functools.partial(cand.count_draw_tokens, counter=ctx.counter), ctx),
                ],
                sinks={
                    "candidates": Sink(
                        candidates_folder(attempt), footer=cand.CandidateFooter(config.variants)
                    )
                },
            )
        ]
        first = Pass(
            "first drafts",
            source=lambda: _candidates(ctx),
            stages=[_choose(ctx)],
            sinks=first_sinks,
            route=C.ROUTE,
        )
    else:
        first = Pass(
            "first drafts",
            source=lambda: _first_drafts(ctx),
            stages=[render, Generate(config.engine, ctx, first_keys, ctx.arm_sampling), _gate(ctx, draft=1)],
            sinks=first_sinks,
            route=C.ROUTE,
        )
    generation = [
        first,
        Pass(
            "repair",
            source=lambda: _repair_queue(ctx),
            stages=[
                _map(RenderRepair(), ctx),
                Generate(repair_engine, ctx, ROW_KEYS + [C.FIRST_DRAFT_REASONS]),
                _gate(ctx, draft=2),
            ],
            sinks={C.ROUTE_COPIES: ctx.copies},
        ),
        Pass(
            "reuse",
            source=lambda: _followers(ctx),
            stages=[_map(reuse_copy, ctx), _gate(ctx, draft=2)],
            sinks={C.ROUTE_COPIES: ctx.copies},
        ),
    ]
    if not config.judge:
        return drawing + generation
    passes = list(drawing)
    for p, draft in zip(generation, (1, 2, 2)):
        held = judge_queue(attempt, p.name)
        passes.append(Pass(p.name, p.source, p.stages, {route: Sink(held) for route in p.sinks}, p.route))
        written = [sink.folder for sink in p.sinks.values()]
        passes.append(
            Pass(
                f"judge {p.name}",
                source=lambda held=held, written=written: _held_for_judge(ctx, held, written),
                stages=[Judge(ctx, draft)],
                sinks=p.sinks,
                route=C.ROUTE,
            )
        )
    return passes


def judge_queue(attempt: Attempt, pass_name: str):
    """Where a pass's gated rows wait for the judge (``--judge``)."""
    return attempt.work.join("judge", pass_name.replace(" ", "-"))


def candidates_folder(attempt: Attempt):
    """Where every gated draw waits to be chosen (``--candidates``)."""
    return attempt.work.join("candidates")


def _first_drafts(ctx: RunContext, also: Sequence = ()):
    """The staged rows not written yet (nor queued for repair, nor in
    ``also``: drawn already), joined with their products (their users ride
    on the rows: staging wrote them there)."""
    attempt, config = ctx.attempt, ctx.plan.config
    todo = resume.remaining(
        attempt,
        attempt.pairs,
        [attempt.copies, attempt.repair_queue, judge_queue(attempt, "first drafts"), *also],
        ctx.resumed,
        ctx.light,
        "first-drafts",
    )
    if not todo.rows:
        return None
    # Small blocks stream: the engine gets work as soon as the first blocks are
    # rendered, progress moves, finished rows leave memory early. Left to
    # itself Ray made one block per file and a whole file one engine task (seen:
    # no progress for minutes). Split at the read, not with repartition(): its
    # task asks for a whole CPU, which a 2-core node running an engine lacks.
    per_block = rows_per_block(todo.rows, config.engine.replicas, concurrent_batches(config.engine))
    blocks = max(1, min(MAX_BLOCKS, -(-todo.rows // per_block)))
    ds = read(
        todo.files,
        todo.folder,
        ctx.light,
        override_num_blocks=blocks,
        columns=[
            C.USER_ID,
            C.PRODUCT_ID,
            C.CHANNEL,
            C.CAMPAIGN_ID,
            C.VARIANT,
            C.EXPERIMENT_ID,
            C.ARM,
            *C.USER_COLUMNS,
        ],
    )
    ds = ds.map_batches(
        JoinProfiles,
        fn_constructor_kwargs=dict(
            users=None,
            products=ctx.products,
            channels=config.channels,
            known_channels=list(ctx.plan.templates),
            variants=config.variants,
            campaign=config.campaign,
            run_id=config.run_id,
        ),
        batch_format="pyarrow",
        compute=stage_pool(config),
        num_cpus=ctx.light,
    )
    return ds.map_batches(_keep_good_rows, batch_format="pyarrow", num_cpus=ctx.light)


def _candidates(ctx: RunContext):
    """The draws of owed rows not written yet (nor queued for repair), each
    row's draws gathered in one block."""
    attempt = ctx.attempt
    todo = resume.remaining(
        attempt,
        candidates_folder(attempt),
        [attempt.copies, attempt.repair_queue, judge_queue(attempt, "first drafts")],
        ctx.resumed,
        ctx.light,
        "candidates",
    )
    if not todo.rows:
        return None
    return cand.gather(read(todo.files, todo.folder, ctx.light), join_partitions(todo.rows))


def _repair_queue(ctx: RunContext):
    """One more draw for each rejected row, told why the first failed. The
    queue may hold rows from an earlier process too; rows already repaired
    into the copies are skipped."""
    attempt = ctx.attempt
    todo = resume.remaining(
        attempt,
        attempt.repair_queue,
        [attempt.copies, judge_queue(attempt, "repair")],
        ctx.resumed,
        ctx.light,
        "repair",
    )
    if not todo.rows:
        return None
    return read(todo.files, todo.folder, ctx.light)


def _followers(ctx: RunContext):
    """Rows whose prompt equals a generated row's, not written yet, each beside its leader's row."""
    attempt = ctx.attempt
    todo = resume.remaining(
        attempt,
        attempt.followers,
        [attempt.copies, judge_queue(attempt, "reuse")],
        ctx.resumed,
        ctx.light,
        "reuse",
    )
    if not todo.rows:
        return None
    ds = read(todo.files, todo.folder, ctx.light)
    return resume.with_leaders(ds, attempt.copies, ctx.light, todo.rows)


def _held_for_judge(ctx: RunContext, held, written: list):
    """A pass's gated rows the judge has not passed on yet to that pass's
    sinks (``written``: only those; a repaired row's id is in the repair
    queue it came from, and is still owed)."""
    todo = resume.remaining(
        ctx.attempt, held, written, ctx.resumed, ctx.light, "judge-" + held.uri.rstrip("/").rsplit("/", 1)[-1]
    )
    if not todo.rows:
        return None
    return read(todo.files, todo.folder, ctx.light)


# --------------------------------------------------------------------------- stages


class Generate:
    """A pass's engine stage, built when the pass runs: a pass with nothing
    owed starts no engine. ``shares_cores_with_ray`` is known before: a CPU
    engine sets the pass's pace."""

    def __init__(self, engine, ctx: RunContext, passthrough: list[str], arm_sampling: Optional[dict] = None):
        self._engine, self._ctx, self._passthrough = engine, ctx, passthrough
        self._arm_sampling = arm_sampling
        self.shares_cores_with_ray = ctx.device == "cpu"

    def __call__(self, ds):
        ctx = self._ctx
        # Arm sampling only when there is some: the call stays the one the stand-in engines know.
        extra = {"arm_sampling": self._arm_sampling} if self._arm_sampling else {}
        generate = build_generate_stage(
            self._engine, ctx.plan.model_source, ctx.device, self._passthrough, ctx.light, **extra
        )
        # A stand-in engine may say otherwise (the benchmarks' and tests' instant one).
        self.shares_cores_with_ray = getattr(generate, "shares_cores_with_ray", False)
        return generate(ds)


class Judge:
    """The judge's stage (``factory.stages.judge``) on a pass's gated rows,
    built when its pass runs, on the run's engine settings and the judge's
    model (``--judge-model``, else the run's)."""

    def __init__(self, ctx: RunContext, draft: int):
        self._ctx, self._draft = ctx, draft
        self.shares_cores_with_ray = ctx.device == "cpu"

    def __call__(self, ds):
        ctx = self._ctx
        config = ctx.plan.config
        judge = build_judge_stage(
            config.engine,
            ctx.plan.judge_model_source,
            ctx.device,
            config.quality,
            ctx.products,
            passthrough=tuple(ds.schema().names),
            sample=config.judge_sample,
            draft=self._draft,
            cpu_stage_num_cpus=ctx.light,
            compute=stage_pool(config),
        )
        return judge(ds)


def _map(fn, ctx: RunContext) -> Stage:
    return lambda ds: ds.map_batches(fn, batch_format="pyarrow", num_cpus=ctx.light)


def _choose(ctx: RunContext) -> Stage:
    """Each owed row's best draw (``factory.candidates.ChooseCandidates``),
    a whole gathered block at a time."""
    return lambda ds: ds.map_batches(
        cand.ChooseCandidates,
        fn_constructor_kwargs=dict(products=ctx.products, counter=ctx.counter),
        batch_size=None,
        batch_format="pyarrow",
        compute=stage_pool(ctx.plan.config),
        num_cpus=ctx.light,
    )


def _gate(ctx: RunContext, draft: int, counted: bool = True) -> Stage:
    plan = ctx.plan
    return lambda ds: ds.map_batches(
        QualityGate,
        fn_constructor_kwargs=dict(
            products=ctx.products,
            policy=plan.config.quality,
            templates=ctx.every_template,
            draft=draft,
            counter=ctx.counter if counted else None,
            offers=plan.config.offers,
            competitors=plan.config.competitors,
        ),
        batch_format="pyarrow",
        compute=stage_pool(plan.config),
        num_cpus=ctx.light,
    )


def _keep_good_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_null(batch[C.REASON]))


def _repair_queue_rows(batch: pa.Table) -> pa.Table:
    return batch.select(list(REPAIR_QUEUE_COLUMNS))
