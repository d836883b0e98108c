"""``--dry-run``: what a run would do and cost, without Ray, an engine or a write.

    prepare()      the run's own checks: config, templates, input schemas,
                   lookup tables, model (no Ray, no engine)
    pass 1 again   the pairs in scope read and checked with the pipeline's own
                   stages (ReadPairs, CheckPairs), called in this process;
                   the rows each servable pair owes, repeats owed once
    tokens         prompts rendered with the real templates (RenderPrompts after
                   JoinProfiles) for a sample of each campaign and channel's
                   rows, counted with the model's own tokenizer and chat template;
                   output tokens at each row's token cap (an upper bound)
    estimate       GPU-hours = output tokens / assumed output tokens per GPU-second,
                   cost = GPU-hours x price per GPU-hour

Nothing is written under ``--output``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.dead_letters import DUPLICATE_PAIR
from factory.config import JobConfig
from factory.prompts import PromptTemplate
from factory.stages.check import CheckPairs, ReadPairs
from factory.pipeline import owed
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


def plan_run(config: JobConfig) -> dict[str, Any]:
    """The dry-run plan of one run as a dict (see ``format_plan``)."""
    from factory.pipeline.plan import prepare

    plan = prepare(config)
    # The campaign's voice and declared offers are in every system prompt (prepare), so in the token estimate too.
    templates = plan.templates
    checked, by_locale = _checked_pairs(plan, config, templates)
    scope = _Scope(config, checked)
    counts = scope.count(by_locale)
    owed_rows = _engine_rows(scope.owed_rows(), plan, config, templates)
    counter = TokenCounter(plan.model_source)
    per_channel = _token_estimates(owed_rows, plan, config, templates, counter)
    return _assemble(config, plan, templates, counts, per_channel, counter)


def _checked_pairs(plan, config: JobConfig, templates: dict[str, PromptTemplate]) -> tuple[pa.Table, Counter]:
    """Pass 1 of the pipeline in this process: the pairs in scope (the run's
    own scope filter), read row group by row group with their provenance,
    each with its dead-letter reason (null when servable); and per campaign
    the pairs left out because of the run's locales."""
    from factory.pipeline.plan import row_group_items, scope as run_scope, scope_filter

    pairs = plan.pairs
    display = {f: (f"s3://{f}" if pairs.loc.is_s3 else f) for f in pairs.files}
    read = ReadPairs(pairs.loc.fs, pairs.columns, display)
    check = CheckPairs(plan.users, plan.products, known_channels=list(templates))
    scope = run_scope(plan)
    excluded_users = scope.get("excluded_users")
    by_locale: Counter = Counter()
    tables = []
    for item in row_group_items(pairs, config.limit, config.campaign):
        batch = read({k: [v] for k, v in item.items()})
        for name in (C.CHANNEL, C.CAMPAIGN_ID):
            if name not in batch.column_names:
                batch = batch.append_column(name, pa.nulls(batch.num_rows, pa.string()))
        if scope:
            batch = scope_filter(batch, **{**scope, "excluded_users": None})
            if excluded_users is not None:
                out = batch.filter(pc.fill_null(pc.is_in(batch[C.USER_ID], value_set=excluded_users), False))
                by_locale.update(config.campaign or c or "default" for c in out[C.CAMPAIGN_ID].to_pylist())
                batch = scope_filter(batch, None, None, None, excluded_users)
        tables.append(check(batch).select([C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.SOURCE,
                                           C.SOURCE_ROW, C.REASON]))
    if not tables:
        empty = pa.table({c: pa.array([], pa.string()) for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID,
                                                                   C.SOURCE, C.REASON)}
                         | {C.SOURCE_ROW: pa.array([], pa.int64())})
        return empty, by_locale
    return pa.concat_tables(tables, promote_options="permissive"), by_locale


class _Scope:
    """Counts of what the run's checked pairs owe, by the rule staging uses
    (``factory.pipeline.owed``)."""

    def __init__(self, config: JobConfig, checked: pa.Table):
        self._config = config
        self._checked = checked
        # The servable pairs in file order, and what they owe: worked out once, for the counts and the rows.
        good = checked.filter(pc.is_null(checked[C.REASON]))
        self._good = good.take(pc.sort_indices(good, sort_keys=[(C.SOURCE, "ascending"),
                                                                 (C.SOURCE_ROW, "ascending")]))
        self._owed = owed.owed_rows(self._good, config.channels, config.variants, config.campaign)

    def count(self, by_locale: Counter) -> dict[str, dict[str, Any]]:
        """Per campaign: pairs in scope, servable, dead letters by reason,
        repeats, pairs whose channel the run skips and (outside the scope)
        pairs left out for their user's locale."""
        out: dict[str, dict[str, Any]] = defaultdict(lambda: {"pairs": 0, "servable": 0, "dead_letters": Counter(),
                                                              "not_generated": Counter()})
        for campaign, n in by_locale.items():
            out[campaign]["not_generated"][LOCALE_EXCLUDED] += n
        checked, good, found = self._checked, self._good, self._owed
        campaign_of = owed.row_campaigns(checked[C.CAMPAIGN_ID], self._config.campaign).to_pylist()
        for campaign, reason in zip(campaign_of, checked[C.REASON].to_pylist()):
            out[campaign]["pairs"] += 1
            if reason is not None:
                out[campaign]["dead_letters"][reason] += 1
        owing = set(found.owing_pairs.to_pylist())
        duplicate = set(found.duplicate_pairs.to_pylist())
        good_campaigns = owed.row_campaigns(good[C.CAMPAIGN_ID], self._config.campaign).to_pylist()
        for i, campaign in enumerate(good_campaigns):
            c = out[campaign]
            if i not in owing:
                c["not_generated"][NOTHING_OWED] += 1
            elif i in duplicate:
                c["dead_letters"][DUPLICATE_PAIR] += 1
            else:
                c["servable"] += 1
        return out

    def owed_rows(self) -> pa.Table:
        """The unique (pair, channel, variant) rows the run owes, as staging
        keeps them, keyed under their campaign."""
        rows = self._owed.rows
        return rows.set_column(rows.column_names.index(C.CAMPAIGN_ID), C.CAMPAIGN_ID, rows[owed.CAMPAIGN]).select(
            [C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.CAMPAIGN_ID, C.VARIANT])


def _engine_rows(owed: pa.Table, plan, config: JobConfig, templates: dict[str, PromptTemplate]) -> pa.Table:
    """``owed`` with ``engine``: whether the row goes to the engine, or reuses
    an identical prompt's copy (the pipeline's prompt dedup, same keys)."""
    from factory import dedup
    from factory.stages.join import row_id

    if not config.dedup_prompts or owed.num_rows == 0:
        return owed.append_column("engine", pa.array([True] * owed.num_rows, pa.bool_()))
    ids = [row_id(config.run_id, *key) for key in zip(
        *(owed[c].to_pylist() for c in (C.CAMPAIGN_ID, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT)))]
    lead = dedup.leaders(ids, dedup.prompt_keys(owed, plan.users, templates))
    return owed.append_column("engine", pa.array([x is None for x in lead], pa.bool_()))


class TokenCounter:
    """Prompt tokens as the engine sees them: the model's chat template and
    tokenizer, loaded from a local folder only (CPU, no model weights). A
    model with no local folder (s3://, a hub id not in the local cache) gets
    an approximation, and the plan says so."""

    def __init__(self, model_source: str):
        self.method = f"approximate: {BYTES_PER_TOKEN:g} UTF-8 bytes per token (no local tokenizer for {model_source})"
        self._tokenizer = None
        if model_source.startswith("s3://"):
            return
        try:
            self._tokenizer = _local_tokenizer(model_source)
            self.method = f"{Path(model_source).name or model_source} tokenizer and chat template"
        except Exception as exc:  # noqa: BLE001 - any failure means: no local tokenizer
            logger.warning("Dry run: no local tokenizer for %s (%s); approximating token counts", model_source, exc)

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    def count(self, chats: Sequence[list[dict[str, str]]]) -> list[int]:
        if self._tokenizer is None:
            return [round(sum(len(m["content"].encode()) for m in chat) / BYTES_PER_TOKEN) for chat in chats]
        texts = [self._tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
                 for chat in chats]
        return [len(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]


@functools.lru_cache(maxsize=4)
def _local_tokenizer(model_source: str):
    """Loaded once per process: a campaigns run plans several runs with one model."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_source, local_files_only=True)


def _sample(indices: list[int], n: int) -> list[int]:
    """``n`` evenly spaced indices (all when fewer): deterministic, spread over the input."""
    if len(indices) <= n:
        return indices
    step = len(indices) / n
    return [indices[int(i * step)] for i in range(n)]


def _token_estimates(owed: pa.Table, plan, config: JobConfig, templates: dict[str, PromptTemplate],
                     counter: TokenCounter) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (campaign, channel): rows owed, rows sent to the engine (the rest
    reuse an identical prompt's copy), and for the engine rows prompt tokens
    (sampled, scaled up) and output tokens at the cap."""
    users = plan.users
    locale_of = dict(zip(users[C.USER_ID].to_pylist(), users[C.LOCALE].to_pylist()))
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    reused: Counter = Counter()
    for i, (campaign, channel, engine) in enumerate(zip(owed[C.CAMPAIGN_ID].to_pylist(), owed[C.CHANNEL].to_pylist(),
                                                        owed["engine"].to_pylist())):
        if engine:
            groups[(campaign, channel)].append(i)
        else:
            reused[(campaign, channel)] += 1
    users_col, channels_col = owed[C.USER_ID].to_pylist(), owed[C.CHANNEL].to_pylist()
    join = JoinProfiles(plan.users, plan.products, config.channels, list(templates), config.variants,
                        config.campaign, run_id=config.run_id)
    render = RenderPrompts(templates, config.engine.max_tokens)
    out = {}
    for key in sorted(reused.keys() - groups.keys()):  # every row of the group reuses a copy
        out[key] = {"rows": reused[key], "engine_rows": 0, "prompt_tokens": 0, "prompt_tokens_per_row": 0,
                    "output_tokens_max": 0, "rows_tokenized": 0}
    for key, rows in sorted(groups.items()):
        cap = sum(config.engine.max_tokens
                  or templates[channels_col[i]].max_tokens * tokens_per_char_factor(locale_of.get(users_col[i]))
                  for i in rows)
        sample = _sample(rows, SAMPLE_ROWS)
        rendered = render(join(owed.take(pa.array(sample, pa.int64()))))
        counts = counter.count([json.loads(m) for m in rendered[C.MESSAGES].to_pylist()])
        mean = sum(counts) / len(counts)
        out[key] = {"rows": len(rows) + reused[key], "engine_rows": len(rows), "prompt_tokens": round(mean * len(rows)),
                    "prompt_tokens_per_row": round(mean, 1), "output_tokens_max": cap,
                    "rows_tokenized": len(sample)}
    return out


def _assemble(config: JobConfig, plan, templates, counts, per_channel, counter: TokenCounter) -> dict[str, Any]:
    tps, price = config.estimate_output_tokens_per_gpu_second, config.gpu_hour_price
    repair = config.quality.repair

    def estimate(rows: int, engine_rows: int, prompt: int, output: int) -> dict[str, Any]:
        hours = output / tps / 3600
        return {"rows": rows, "engine_rows": engine_rows, "prompt_tokens": prompt, "output_tokens_max": output,
                "gpu_hours": hours, "cost_usd": hours * price,
                # Worst case of the repair pass: every row rejected and drafted again.
                "gpu_hours_with_repair_max": hours * 2 if repair else hours,
                "cost_usd_with_repair_max": (hours * 2 if repair else hours) * price}

    campaigns = []
    for name in sorted(set(counts) | {c for c, _ in per_channel}):
        got = counts.get(name, {"pairs": 0, "servable": 0, "dead_letters": Counter(), "not_generated": Counter()})
        channels = {ch: dict(v) for (c, ch), v in per_channel.items() if c == name}
        totals = estimate(*(sum(v[k] for v in channels.values())
                            for k in ("rows", "engine_rows", "prompt_tokens", "output_tokens_max")))
        campaigns.append({"campaign": name, "pairs": got["pairs"], "servable_pairs": got["servable"],
                          "dead_letters": dict(sorted(got["dead_letters"].items())),
                          "not_generated": dict(sorted(got["not_generated"].items())),
                          "channels": channels, **totals})
    total = estimate(*(sum(c[k] for c in campaigns) for k in ("rows", "engine_rows", "prompt_tokens",
                                                                 "output_tokens_max")))
    lookup = {r.name: {"rows_read": r.rows_read, "rows_kept": r.rows_kept, "problems": dict(r.problems)}
              for r in plan.table_reports}
    return {
        "run_id": config.run_id, "run_date": config.run_date.isoformat(), "campaign": config.campaign_label,
        "output": plan.run.uri, "model": config.model, "channels": list(config.channels),
        "variants": config.variants, "locales": config.locales, "brand_voice": config.brand_voice,
        "offers": [o.model_dump() for o in config.offers], "competitors": len(config.competitors),
        "template_versions": {c: templates[c].version for c in config.channels},
        "input_tables": lookup, "campaigns": campaigns, "total": total,
        "assumptions": {
            "output_tokens_per_gpu_second": tps, "gpu_hour_price_usd": price,
            "output_tokens": "each row's token cap (the template's max_tokens, doubled for zh/ja/ko, "
                             "or --max-tokens): an upper bound; copy usually stops earlier",
            "repair": "on: a second draft for every rejected row, at most one per row" if repair else "off",
            "engine_rows": ("rows whose prompt is not identical to an earlier row's (the others reuse its copy)"
                            if config.dedup_prompts else "every row (--no-dedup)"),
            "prompt_tokens": (counter.method + f"; up to {SAMPLE_ROWS} rendered rows per campaign and channel, "
                              "scaled to all rows (exact when all were rendered)"),
        },
    }


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else (f"{x:.3g}" if x else "0")


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a table for people."""
    t, a = plan["total"], plan["assumptions"]
    lines = [f"Dry run {plan['run_id']}: no engine started, nothing written (would write under {plan['output']})",
             f"  model: {plan['model']}   channels: {', '.join(plan['channels'])}   variants: {plan['variants']}"
             + (f"   locales: {', '.join(plan['locales'])}" if plan["locales"] else "")
             + (f"   brand voice: {plan['brand_voice']}" if plan["brand_voice"] else "")]
    if plan.get("offers"):
        lines.append("  offers: " + "; ".join(f"{o['kind']}: {o['text']}" for o in plan["offers"]))
    for c in plan["campaigns"]:
        skipped = {**c["dead_letters"], **c["not_generated"]}
        lines.append(f"  campaign {c['campaign']}: {c['pairs']} pair(s), {c['servable_pairs']} servable"
                     + ("; " + ", ".join(f"{r}={n}" for r, n in skipped.items()) if skipped else ""))
    lines.append(f"  {'campaign':<16}{'channel':<15}{'rows':>8}{'engine':>8}{'prompt tok':>13}{'tok/row':>9}"
                 f"{'output tok':>13}")
    for c in plan["campaigns"]:
        for ch, v in c["channels"].items():
            lines.append(f"  {c['campaign']:<16}{ch:<15}{v['rows']:>8,}{v['engine_rows']:>8,}{v['prompt_tokens']:>13,}"
                         f"{v['prompt_tokens_per_row']:>9}{v['output_tokens_max']:>13,}")
    lines.append(f"  {'total':<31}{t['rows']:>8,}{t['engine_rows']:>8,}{t['prompt_tokens']:>13,}{'':>9}"
                 f"{t['output_tokens_max']:>13,}")
    lines.append("  (engine: rows sent to the engine; the others reuse the copy of an identical prompt)")
    lines.append(f"  estimate: {_num(t['gpu_hours'])} GPU-hours, {_num(t['cost_usd'])} USD"
                 + (f" (at most {_num(t['gpu_hours_with_repair_max'])} GPU-hours, "
                    f"{_num(t['cost_usd_with_repair_max'])} USD with the repair pass)"
                    if t["gpu_hours_with_repair_max"] != t["gpu_hours"] else ""))
    lines.append(f"  assumed: {a['output_tokens_per_gpu_second']:,.0f} output tokens/s per GPU, "
                 f"{a['gpu_hour_price_usd']:.2f} USD per GPU-hour; output tokens at the cap (upper bound)")
    lines.append(f"  prompt tokens: {a['prompt_tokens']}")
    return "\n".join(lines)
