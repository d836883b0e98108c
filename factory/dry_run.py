"""``--dry-run``: what a run would do and cost, without an engine or a write.

    prepare()      the run's own checks: config, templates, input schemas,
                   lookup tables, model (on the driver, before Ray)
    tally          on Ray Data, as the run stages (``factory.pipeline.staging``):
                   every pair in scope read and checked by pass 1's own stages,
                   grouped by the run's product buckets, and each bucket's rows
                   decided by the staging rule (``staging.bucket_rows``: what a
                   pair owes, duplicates, identical prompts). Each bucket
                   returns counts and a sample: the driver adds up one small
                   record per bucket, never the pairs
    tokens         the sample (the engine rows with the smallest row ids per
                   campaign and channel: uniform, since row ids are hashes, and
                   the same on every rerun) rendered with the real templates
                   and counted with the model's own tokenizer and chat
                   template, scaled to all rows; output tokens at each row's
                   token cap (an upper bound)
    estimate       GPU-hours = output tokens / assumed output tokens per GPU-second,
                   cost = GPU-hours x price per GPU-hour

Nothing is written under ``--output``. Ray is started (or joined, under
``ray job submit``) as for a run; no engine is.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.config import JobConfig
from factory.dead_letters import DUPLICATE_PAIR
from factory.pipeline import owed, staging
from factory.pipeline.plan import LOCALE_EXCLUDED_COLUMN, users_named
from factory.prompts import PromptTemplate
from factory.stages.join import JoinProfiles
from factory.stages.render import RenderPrompts, tokens_per_char_factor

logger = logging.getLogger(__name__)

# Rendered and tokenized per (campaign, channel); all rows when there are fewer.
SAMPLE_ROWS = 256
# Without a local tokenizer: about four UTF-8 bytes per token (English BPE).
BYTES_PER_TOKEN = 4.0
# Pairs the pipeline does not generate because of the run's locales (what the
# lead's filter should call them; a dead letter or a count, see docs/campaigns.md).
LOCALE_EXCLUDED = "locale_not_in_campaign"
NOTHING_OWED = "channel_not_in_run"
_BUCKET = "__bucket"
SAMPLE_COLUMNS = C.ROW_KEY


def plan_run(config: JobConfig, sample_rows: int = SAMPLE_ROWS) -> dict[str, Any]:
    """The dry-run plan of one run as a dict (see ``format_plan``); prompt
    tokens from up to ``sample_rows`` rendered rows per campaign and channel."""
    import ray

    from factory.cluster import check_shared_storage
    from factory.pipeline import experiment
    from factory.pipeline.plan import load_users, prepare
    from factory.ray_session import configure_ray_data, start_or_join

    plan = prepare(config)  # every check that can fail does so before Ray starts
    # An experiment's night as the run would plan it (nothing pinned): who is in which arm, who gets no copy.
    night = experiment.night(plan, plan.run.join("_dry_run"), pin=False)
    start_or_join(dashboard=config.ray_dashboard)
    # Ray's workers read the pairs and the users: on a cluster a path must mean the same to each
    # (factory/cluster.py).
    check_shared_storage(
        {"--pairs": plan.pairs.loc.uri, "--users": plan.users_input.loc.uri}, config.shared_filesystem
    )
    configure_ray_data()
    # The campaign's voice and declared offers are in every system prompt (prepare), so in the token estimate
    # too.
    templates = plan.templates
    load_users(plan)
    arms = experiment.ArmRows.of(plan, night)
    counts, per_channel, samples = tally(plan, ray.put(plan.products), sample_rows, arms)
    counter = TokenCounter(plan.model_source)
    per_channel = _token_estimates(per_channel, samples, plan, config, templates, counter)
    planned = _assemble(config, plan, templates, counts, per_channel, counter, sample_rows)
    return {**planned, "experiment": _experiment(night, counts)} if night else planned


def _experiment(night, counts) -> dict[str, Any]:
    alloc = night.allocation
    return {
        "experiment_id": alloc["experiment_id"],
        "method": alloc["method"],
        "source": night.source,
        "holdout": alloc["holdout"],
        "shares": alloc["shares"],
        "holdout_rows": sum(c["holdout_rows"] for c in counts.values()),
        "rows_by_arm": dict(sorted(sum((c["rows_by_arm"] for c in counts.values()), Counter()).items())),
    }


# --------------------------------------------------------------------------- the tally, on Ray Data


def tally(plan, products, sample_rows: int = SAMPLE_ROWS, arms=None) -> tuple[dict, dict, dict]:
    """Counts per campaign, rows per (campaign, channel) and the token sample,
    from one record per product bucket (see the module). ``arms``: an
    experiment's arm step (staging's ArmRows): holdout rows are counted apart."""
    from factory.pipeline.plan import join_partitions

    config = plan.config
    n_buckets = staging.stage_buckets(plan)
    checked = staging.checked_pairs(plan, products, mark_locale_excluded=True).map_batches(
        _with_bucket,
        fn_kwargs={"n_buckets": n_buckets},
        batch_format="pyarrow",
        num_cpus=config.cpu_stage_num_cpus,
    )
    # One partition per CPU at most (each is an aggregator actor; Ray's default is 200).
    partitions = join_partitions(n_buckets * staging.STAGE_BUCKET_PAIRS)
    records = checked.groupby(_BUCKET, num_partitions=partitions).map_groups(
        TallyBucket,
        fn_constructor_kwargs={
            "config": config,
            "templates": plan.templates,
            "sample_rows": sample_rows,
            "arms": arms,
            "arm_templates": plan.experiment.arm_templates if plan.experiment else None,
        },
        batch_format="pyarrow",
        compute=staging.stage_pool(config),
        num_cpus=config.cpu_stage_num_cpus,
    )
    counts: dict[str, dict[str, Any]] = defaultdict(_campaign_counts)
    per_channel: dict[tuple[str, str], dict[str, int]] = defaultdict(Counter)
    samples: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records.iter_rows():
        got = json.loads(record["tally"])
        for campaign, c in got["campaigns"].items():
            mine = counts[campaign]
            mine["pairs"] += c["pairs"]
            mine["servable"] += c["servable"]
            mine["dead_letters"].update(c["dead_letters"])
            mine["not_generated"].update(c["not_generated"])
            mine["holdout_rows"] += c["holdout_rows"]
            mine["rows_by_arm"].update(c["rows_by_arm"])
        for row in got["channels"]:
            per_channel[(row["campaign"], row["channel"])].update(row["counts"])
        for row in got["sample"]:
            samples[(row[C.CAMPAIGN_ID], row[C.CHANNEL])].append(row)
    # The smallest row ids over all buckets: each bucket sent its own smallest.
    samples = {key: sorted(rows, key=lambda r: r[C.ROW_ID])[:sample_rows] for key, rows in samples.items()}
    return counts, per_channel, samples


def _campaign_counts() -> dict[str, Any]:
    return {
        "pairs": 0,
        "servable": 0,
        "dead_letters": Counter(),
        "not_generated": Counter(),
        "holdout_rows": 0,
        "rows_by_arm": Counter(),
    }


def _with_bucket(batch: pa.Table, n_buckets: int) -> pa.Table:
    return batch.append_column(_BUCKET, staging.product_buckets(batch[C.PRODUCT_ID], n_buckets))


class TallyBucket:
    """One product bucket's checked pairs → one record (a JSON text): per
    campaign, pairs, servable pairs, dead letters and pairs not generated,
    by reason; per (campaign, channel), rows owed, rows for the engine, rows
    reusing an identical prompt's copy and the output token cap; and the
    bucket's ``sample_rows`` engine rows with the smallest row ids per
    (campaign, channel)."""

    def __init__(
        self,
        config: JobConfig,
        templates: dict[str, PromptTemplate],
        sample_rows: int,
        arms=None,
        arm_templates=None,
    ):

        self._config = config
        self._templates = templates
        self._arms, self._arm_templates = arms, arm_templates or {}
        self._sample_rows = sample_rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        config = self._config
        for name in (C.CHANNEL, C.CAMPAIGN_ID):
            if name not in batch.column_names:
                batch = batch.append_column(name, pa.nulls(batch.num_rows, pa.string()))
        if LOCALE_EXCLUDED_COLUMN not in batch.column_names:  # a run without a scope: no stage flagged any
            batch = batch.append_column(LOCALE_EXCLUDED_COLUMN, pa.array([False] * batch.num_rows))
        campaigns: dict[str, dict[str, Any]] = defaultdict(_campaign_counts)
        labels = owed.row_campaigns(batch[C.CAMPAIGN_ID], config.campaign).to_pylist()
        for label, out, reason in zip(
            labels, batch[LOCALE_EXCLUDED_COLUMN].to_pylist(), batch[C.REASON].to_pylist()
        ):
            c = campaigns[label]
            if out:
                c["not_generated"][LOCALE_EXCLUDED] += 1
                continue
            c["pairs"] += 1
            if reason is not None:
                c["dead_letters"][reason] += 1
        good = batch.filter(pc.and_(pc.is_null(batch[C.REASON]), pc.invert(batch[LOCALE_EXCLUDED_COLUMN])))
        good = good.select(list(staging.STAGED_PAIR_COLUMNS))
        users, keys = staging.bucket_keys(good, config, self._templates, self._arm_templates)
        # No holdout folder: the dry run counts the holdout, it writes nothing.
        decided = staging.bucket_rows(good, config, users, keys, self._arms)
        self._count_pairs(decided, campaigns)
        if self._arms is not None and config.campaign:  # an experiment is one campaign's
            campaigns[config.campaign]["holdout_rows"] += decided.holdout
            campaigns[config.campaign]["rows_by_arm"].update(
                a for a in decided.rows[C.ARM].to_pylist() if a is not None
            )
        channels, sample = self._count_rows(decided.rows, users)
        record = {"campaigns": campaigns, "channels": channels, "sample": sample}
        return pa.table({"tally": [json.dumps(record)]})

    def _count_pairs(self, decided, campaigns) -> None:
        owing = set(decided.owing.owing_pairs.to_pylist())
        duplicate = set(decided.owing.duplicate_pairs.to_pylist())
        labels = owed.row_campaigns(decided.pairs[C.CAMPAIGN_ID], self._config.campaign).to_pylist()
        for i, label in enumerate(labels):
            c = campaigns[label]
            if i not in owing:
                c["not_generated"][NOTHING_OWED] += 1
            elif i in duplicate:
                c["dead_letters"][DUPLICATE_PAIR] += 1
            else:
                c["servable"] += 1

    def _count_rows(
        self, rows: pa.Table, users: pa.Table
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        config = self._config
        locale_of = dict(zip(users[C.USER_ID].to_pylist(), users[C.LOCALE].to_pylist()))
        engine = pc.is_null(rows[C.DEDUP_OF]).to_pylist()
        counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
        candidates: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, (campaign, channel, user, sent, arm) in enumerate(
            zip(
                rows[owed.CAMPAIGN].to_pylist(),
                rows[C.CHANNEL].to_pylist(),
                rows[C.USER_ID].to_pylist(),
                engine,
                rows[C.ARM].to_pylist(),
            )
        ):
            c = counts[(campaign, channel)]
            c["rows"] += 1
            if sent:
                c["engine_rows"] += 1
                c["output_tokens_max"] += config.engine.max_tokens or self._arm_templates.get(
                    arm, self._templates
                )[channel].max_tokens * tokens_per_char_factor(locale_of.get(user))
                candidates[(campaign, channel)].append(i)
        ids = rows[C.ROW_ID].to_pylist()
        keyed = rows.set_column(rows.column_names.index(C.CAMPAIGN_ID), C.CAMPAIGN_ID, rows[owed.CAMPAIGN])
        sample = []
        for at in candidates.values():
            smallest = sorted(at, key=ids.__getitem__)[: self._sample_rows]
            sample += keyed.take(pa.array(smallest, pa.int64())).select(list(SAMPLE_COLUMNS)).to_pylist()
        channels = [{"campaign": k[0], "channel": k[1], "counts": dict(v)} for k, v in counts.items()]
        return channels, sample


class TokenCounter:
    """Prompt tokens as the engine sees them: the model's chat template and
    tokenizer, loaded from a local folder only (CPU, no model weights). A
    model with no local folder (s3://, a hub id not in the local cache) gets
    an approximation, and the plan says so."""

    def __init__(self, model_source: str):
        self.method = (
            f"approximate: {BYTES_PER_TOKEN:g} UTF-8 bytes per token (no local tokenizer for {model_source})"
        )
        self._tokenizer = None
        if model_source.startswith("s3://"):
            return
        try:
            self._tokenizer = _local_tokenizer(model_source)
            self.method = f"{Path(model_source).name or model_source} tokenizer and chat template"
        except Exception as exc:  # noqa: BLE001 - any failure means: no local tokenizer
            logger.warning(
                "Dry run: no local tokenizer for %s (%s); approximating token counts", model_source, exc
            )

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    def count(self, chats: Sequence[list[dict[str, str]]]) -> list[int]:
        if self._tokenizer is None:
            return [round(sum(len(m["content"].encode()) for m in chat) / BYTES_PER_TOKEN) for chat in chats]
        texts = [
            self._tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            for chat in chats
        ]
        return [len(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]


@functools.lru_cache(maxsize=4)
def _local_tokenizer(model_source: str):
    """Loaded once per process: a campaigns run plans several runs with one model."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_source, local_files_only=True)


def _token_estimates(
    per_channel: dict[tuple[str, str], Counter],
    samples: dict[tuple[str, str], list[dict]],
    plan,
    config: JobConfig,
    templates: dict[str, PromptTemplate],
    counter: TokenCounter,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (campaign, channel): rows owed, rows sent to the engine (the rest
    reuse an identical prompt's copy), and for the engine rows prompt tokens
    (the sample's mean, scaled up) and output tokens at the cap."""
    sampled_users = sorted({r[C.USER_ID] for rows in samples.values() for r in rows if r[C.USER_ID]})
    join = JoinProfiles(
        users_named(plan, sampled_users),  # the sample's users only: the table stays on Ray
        plan.products,
        config.channels,
        list(templates),
        config.variants,
        config.campaign,
        run_id=config.run_id,
    )
    render = RenderPrompts(
        templates, config.engine.max_tokens, plan.experiment.arm_templates if plan.experiment else None
    )
    out = {}
    for key, c in sorted(per_channel.items()):
        engine_rows = c.get("engine_rows", 0)
        sample = samples.get(key, [])
        mean = 0.0
        if sample:
            rows = pa.Table.from_pylist(sample, schema=_SAMPLE_SCHEMA).drop_columns([C.ROW_ID])
            rendered = render(join(rows))
            counts = counter.count([json.loads(m) for m in rendered[C.MESSAGES].to_pylist()])
            mean = sum(counts) / len(counts)
        out[key] = {
            "rows": c.get("rows", 0),
            "engine_rows": engine_rows,
            "prompt_tokens": round(mean * engine_rows),
            "prompt_tokens_per_row": round(mean, 1),
            "output_tokens_max": c.get("output_tokens_max", 0),
            "rows_tokenized": len(sample),
        }
    return out


_SAMPLE_SCHEMA = pa.schema(
    [
        (C.ROW_ID, pa.string()),
        (C.USER_ID, pa.string()),
        (C.PRODUCT_ID, pa.string()),
        (C.CHANNEL, pa.string()),
        (C.CAMPAIGN_ID, pa.string()),
        (C.VARIANT, pa.int32()),
        (C.EXPERIMENT_ID, pa.string()),
        (C.ARM, pa.string()),
    ]
)


def _assemble(
    config: JobConfig, plan, templates, counts, per_channel, counter: TokenCounter, sample_rows: int
) -> dict[str, Any]:
    tps, price = config.estimate_output_tokens_per_gpu_second, config.gpu_hour_price
    repair = config.quality.repair

    # --candidates: each engine row is drawn K/M times; the prompt is the same (the prefix cache partly serves
    # it).
    draws = config.candidates / config.variants if config.candidates > 1 else 1

    def estimate(
        rows: int, engine_rows: int, prompt: int, output: int, drawn: bool = False
    ) -> dict[str, Any]:
        if not drawn:  # a campaign's channels count one draw a row; the total adds up drawn campaigns
            engine_rows, output = round(engine_rows * draws), round(output * draws)
        hours = output / tps / 3600
        return {
            "rows": rows,
            "engine_rows": engine_rows,
            "prompt_tokens": prompt,
            "output_tokens_max": output,
            "gpu_hours": hours,
            "cost_usd": hours * price,
            # Worst case of the repair pass: every row rejected and drafted again.
            "gpu_hours_with_repair_max": hours * 2 if repair else hours,
            "cost_usd_with_repair_max": (hours * 2 if repair else hours) * price,
        }

    campaigns = []
    for name in sorted(set(counts) | {c for c, _ in per_channel}):
        got = counts.get(
            name, {"pairs": 0, "servable": 0, "dead_letters": Counter(), "not_generated": Counter()}
        )
        channels = {ch: dict(v) for (c, ch), v in per_channel.items() if c == name}
        totals = estimate(
            *(
                sum(v[k] for v in channels.values())
                for k in ("rows", "engine_rows", "prompt_tokens", "output_tokens_max")
            )
        )
        campaigns.append(
            {
                "campaign": name,
                "pairs": got["pairs"],
                "servable_pairs": got["servable"],
                "dead_letters": dict(sorted(got["dead_letters"].items())),
                "not_generated": dict(sorted(got["not_generated"].items())),
                "channels": channels,
                **totals,
            }
        )
    total = estimate(
        *(
            sum(c[k] for c in campaigns)
            for k in ("rows", "engine_rows", "prompt_tokens", "output_tokens_max")
        ),
        drawn=True,
    )
    lookup = {
        r.name: {"rows_read": r.rows_read, "rows_kept": r.rows_kept, "problems": dict(r.problems)}
        for r in plan.table_reports
    }
    return {
        "run_id": config.run_id,
        "run_date": config.run_date.isoformat(),
        "campaign": config.campaign_label,
        "output": plan.run.uri,
        "model": config.model,
        "channels": list(config.channels),
        "variants": config.variants,
        "locales": config.locales,
        "brand_voice": config.brand_voice,
        "offers": [o.model_dump() for o in config.offers],
        "competitors": len(config.competitors),
        "template_versions": {c: templates[c].version for c in config.channels},
        "input_tables": lookup,
        "campaigns": campaigns,
        "total": total,
        "assumptions": {
            "output_tokens_per_gpu_second": tps,
            "gpu_hour_price_usd": price,
            "output_tokens": "each row's token cap (the template's max_tokens, doubled for zh/ja/ko, "
            "or --max-tokens): an upper bound; copy usually stops earlier",
            "repair": "on: a second draft for every rejected row, at most one per row" if repair else "off",
            "engine_rows": (
                "rows whose prompt is not identical to an earlier row's (the others reuse its copy)"
                if config.dedup_prompts
                else "every row (--no-dedup)"
            ),
            "prompt_tokens": (
                counter.method + f"; up to {sample_rows} rendered rows per campaign and channel, "
                "scaled to all rows (exact when all were rendered)"
            ),
        },
    }


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else (f"{x:.3g}" if x else "0")


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a table for people."""
    t, a = plan["total"], plan["assumptions"]
    lines = [
        f"Dry run {plan['run_id']}: no engine started, nothing written (would write under {plan['output']})",
        f"  model: {plan['model']}   channels: {', '.join(plan['channels'])}   variants: {plan['variants']}"
        + (f"   locales: {', '.join(plan['locales'])}" if plan["locales"] else "")
        + (f"   brand voice: {plan['brand_voice']}" if plan["brand_voice"] else ""),
    ]
    if plan.get("offers"):
        lines.append("  offers: " + "; ".join(f"{o['kind']}: {o['text']}" for o in plan["offers"]))
    for c in plan["campaigns"]:
        skipped = {**c["dead_letters"], **c["not_generated"]}
        lines.append(
            f"  campaign {c['campaign']}: {c['pairs']} pair(s), {c['servable_pairs']} servable"
            + ("; " + ", ".join(f"{r}={n}" for r, n in skipped.items()) if skipped else "")
        )
    lines.append(
        f"  {'campaign':<16}{'channel':<15}{'rows':>8}{'engine':>8}{'prompt tok':>13}{'tok/row':>9}"
        f"{'output tok':>13}"
    )
    for c in plan["campaigns"]:
        for ch, v in c["channels"].items():
            lines.append(
                f"  {c['campaign']:<16}{ch:<15}{v['rows']:>8,}{v['engine_rows']:>8,}{v['prompt_tokens']:>13,}"
                f"{v['prompt_tokens_per_row']:>9}{v['output_tokens_max']:>13,}"
            )
    lines.append(
        f"  {'total':<31}{t['rows']:>8,}{t['engine_rows']:>8,}{t['prompt_tokens']:>13,}{'':>9}"
        f"{t['output_tokens_max']:>13,}"
    )
    lines.append("  (engine: rows sent to the engine; the others reuse the copy of an identical prompt)")
    lines.append(
        f"  estimate: {_num(t['gpu_hours'])} GPU-hours, {_num(t['cost_usd'])} USD"
        + (
            f" (at most {_num(t['gpu_hours_with_repair_max'])} GPU-hours, "
            f"{_num(t['cost_usd_with_repair_max'])} USD with the repair pass)"
            if t["gpu_hours_with_repair_max"] != t["gpu_hours"]
            else ""
        )
    )
    lines.append(
        f"  assumed: {a['output_tokens_per_gpu_second']:,.0f} output tokens/s per GPU, "
        f"{a['gpu_hour_price_usd']:.2f} USD per GPU-hour; output tokens at the cap (upper bound)"
    )
    lines.append(f"  prompt tokens: {a['prompt_tokens']}")
    e = plan.get("experiment")
    if e:
        lines.append(
            f"  experiment {e['experiment_id']}: {e['method']} allocation ({e['source']}), shares "
            + ", ".join(f"{arm}={share:.3f}" for arm, share in e["shares"].items())
            + f"; holdout {e['holdout']:g}: {e['holdout_rows']:,} row(s) get no copy (not counted above)"
        )
    return "\n".join(lines)
