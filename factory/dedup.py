"""Work avoided and work ordered, decided on the driver when rows are staged.

Identical prompts. A prompt is a pure function of the row's template, the
product, the profile fields that template names, the locale and the campaign
(prompts.py renders only allow-listed placeholders). Users of one segment
often share every one of those fields, so their rows would send the engine
the same prompt. The first such row in staged order (deterministic, so every
process of an attempt agrees) is the *leader* and is generated; the others
are *followers*: they reuse the leader's final copy and are still judged by
the quality gate on their own. The key hashes the formatted field values
(``prompts.format_value``), the same text the renderer puts in the prompt.

Prefix-cache order. Rows that share the long part of their prompt (the
channel's system text and worked examples, then the product) are written next
to each other, so they reach the same engine replica in the same batches and
vLLM's prefix cache serves the shared part once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.prompts import USER_FIELDS, PromptTemplate, format_value, language_for
from factory.stages.render import tokens_per_char_factor


def profile_signatures(users: pa.Table, fields: frozenset[str]) -> pa.Array:
    """Per row of ``users``: a digest of what a template with ``fields``
    shows of the user (plus the locale, which sets the language and the
    token cap). Once per user, not per row: a user has many rows."""
    names = sorted(f for f in fields & USER_FIELDS if f in users.column_names)
    columns = [users[n].to_pylist() for n in names]
    out = []
    for i, locale in enumerate(users[C.LOCALE].to_pylist()):
        parts = [language_for(locale), str(tokens_per_char_factor(locale))]
        parts.extend(format_value(n, col[i]) for n, col in zip(names, columns))
        out.append(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16])
    return pa.array(out, pa.string())


class PromptKeys:
    """Prompt keys for rows of one run: one string per row, equal keys mean
    equal prompts. Columnar per row; the per-user signatures are computed
    once per set of template fields and kept, so staging a run in buckets
    pays for them once."""

    def __init__(
        self,
        users: pa.Table,
        templates: Mapping[str, PromptTemplate],
        arm_templates: Optional[Mapping[str, Mapping[str, PromptTemplate]]] = None,
    ):
        # arm_templates: per experiment arm, its templates (a row with an arm is rendered from them).
        self._users, self._templates = users, templates
        self._arm_templates = arm_templates or {}
        self._signatures: dict[frozenset, pa.Array] = {}

    def _signature(self, fields: frozenset) -> pa.Array:
        if fields not in self._signatures:
            self._signatures[fields] = profile_signatures(self._users, fields)
        return self._signatures[fields]

    def __call__(self, rows: pa.Table) -> pa.Array:
        n = rows.num_rows
        user_index = pc.index_in(rows[C.USER_ID], value_set=self._users[C.USER_ID])
        channel = rows[C.CHANNEL]
        signature = pa.nulls(n, pa.string())
        version = pa.nulls(n, pa.string())
        arm = rows[C.ARM] if C.ARM in rows.column_names else pa.nulls(n, pa.string())
        for name in pc.unique(channel).drop_null().to_pylist():
            on_channel = pc.equal(channel, name)
            for arm_name in pc.unique(arm).to_pylist():
                # A staged row's channel always has a template; an arm's own, if it has one.
                template = self._arm_templates.get(arm_name, self._templates)[name]
                here = pc.and_(on_channel, pc.is_null(arm) if arm_name is None else pc.equal(arm, arm_name))
                here = pc.fill_null(here, False)
                signature = pc.if_else(here, pc.take(self._signature(template.fields), user_index), signature)
                version = pc.if_else(here, template.version, version)
        # A user missing from the table (not staged, but keep keys total) is its own key.
        absent = pc.binary_join_element_wise("", pc.fill_null(rows[C.USER_ID], ""), "\x00")
        null = pa.scalar("\x00", pa.string())
        parts = [
            pc.fill_null(rows[C.CAMPAIGN_ID].cast(pa.string()), null),
            pc.fill_null(version, null),
            pc.fill_null(rows[C.VARIANT].cast(pa.string()), null),
            pc.fill_null(rows[C.PRODUCT_ID].cast(pa.string()), null),
            pc.coalesce(signature, absent),
        ]
        if C.ARM in rows.column_names:  # two arms never share a copy, even with equal prompts (sampling arms)
            parts.append(pc.fill_null(arm, null))
        return _one_array(pc.binary_join_element_wise(*parts, "\x1f"))


def prompt_keys(
    rows: pa.Table,
    users: pa.Table,
    templates: Mapping[str, PromptTemplate],
    arm_templates: Optional[Mapping[str, Mapping[str, PromptTemplate]]] = None,
) -> pa.Array:
    """One key per row; equal keys mean equal prompts."""
    return PromptKeys(users, templates, arm_templates)(rows)


def _one_array(values) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def leaders(row_ids: list[str], keys: pa.Array) -> list[Optional[str]]:
    """For each row, the row id of the first row with the same key, or None
    when the row is that first row itself (it is generated)."""
    return leader_ids(
        pa.chunked_array([pa.array(row_ids, pa.string())]), pa.chunked_array([key_digests(keys)])
    ).to_pylist()


def key_digests(keys: pa.Array) -> pa.Array:
    """16-byte digests of prompt keys: what the driver keeps per row."""
    return pa.array(
        [hashlib.blake2b(k.encode(), digest_size=16).digest() for k in keys.to_pylist()], pa.binary(16)
    )


def leader_ids(row_ids: pa.ChunkedArray, digests: pa.ChunkedArray) -> pa.ChunkedArray:
    """Columnar ``leaders``: per row, the id of the first row with the same
    key digest, null for that first row itself."""
    table = pa.table({"id": row_ids, "key": digests, "i": pa.array(range(len(row_ids)), pa.int64())})
    first = table.group_by("key", use_threads=False).aggregate([("i", "min")])
    lead_index = pc.take(first["i_min"], pc.index_in(table["key"], value_set=first["key"]))
    lead = pc.take(table["id"], lead_index)
    return pc.if_else(pc.equal(lead_index, table["i"]), pa.scalar(None, pa.string()), lead)


def prefix_cache_order(rows: pa.Table, users: pa.Table) -> pa.Array:
    """Indices that put rows sharing a long prompt prefix side by side.

    A prompt is the channel's system text and worked example, then its
    instruction in the user's language, then the product, then the user.
    Sorting by channel, locale and product puts the rows of one (channel,
    language, product) together, so the engine computes that prefix once and
    serves the rest from its cache. Channel first also keeps each engine
    batch to one channel: Ray's engine stage returns a batch when its slowest
    row is done, and a batch of short ad headlines held back by one long
    blurb keeps its finished rows in flight for nothing (1,000 rows on 2
    cores: 4.6 rows/s channel first, 4.2 with channels mixed by product).
    Campaign, user and variant make the order total and deterministic. An
    experiment arm has its own system text (its voice, its templates): arm
    comes right after channel."""
    locale = pc.take(users[C.LOCALE], pc.index_in(rows[C.USER_ID], value_set=users[C.USER_ID]))
    keyed = rows.append_column("__locale", locale)
    arm = [(C.ARM, "ascending")] if C.ARM in rows.column_names else []
    return pc.sort_indices(
        keyed,
        sort_keys=[
            (C.CHANNEL, "ascending"),
            *arm,
            ("__locale", "ascending"),
            (C.PRODUCT_ID, "ascending"),
            (C.CAMPAIGN_ID, "ascending"),
            (C.USER_ID, "ascending"),
            (C.VARIANT, "ascending"),
        ],
    )


WORK_COLUMNS = (C.ROW_ID, C.CHANNEL, C.DEDUP_OF, C.NUM_INPUT_TOKENS, C.NUM_OUTPUT_TOKENS, C.NUM_CACHED_TOKENS)


def work_figures(rows: pa.Table) -> dict:
    """``WorkTally`` figures of one table of rows."""
    tally = WorkTally()
    tally.add(rows)
    return tally.figures()


class WorkTally:
    """What the engine did and what it was spared, from the published rows
    (``WORK_COLUMNS``), added up one part (file) at a time. Token counts are
    those of each row's final generation (a repaired row's first draft is
    not counted). What a reuse saved is its leader's tokens, which the reusing
    row carries until it is written (``C.SAVED_PROMPT_TOKENS``): the tally
    never needs the leaders' files."""

    _FIELDS = (
        "n_gen",
        "n_reused",
        "prompt_tokens",
        "output_tokens",
        "cached",
        "measured_prompt",
        "measured_rows",
        "saved_prompt",
        "saved_output",
    )

    def __init__(self) -> None:
        for name in self._FIELDS:
            setattr(self, name, 0)
        self.channel_sums: dict[
            str, list[int]
        ] = {}  # channel -> [prompt sum, prompt n, output sum, output n]

    def add(self, rows: pa.Table, carried: Optional[pa.Table] = None) -> None:
        """Count ``rows`` (as written); ``carried`` (the same rows before the
        writer shaped them, default ``rows``) may hold the saved tokens."""
        reused = pc.is_valid(rows[C.DEDUP_OF])
        generated = rows.filter(pc.invert(reused))
        self.n_gen += generated.num_rows
        self.n_reused += rows.num_rows - generated.num_rows
        carried = rows if carried is None else carried
        for name, column in (
            ("saved_prompt", C.SAVED_PROMPT_TOKENS),
            ("saved_output", C.SAVED_OUTPUT_TOKENS),
        ):
            if column in carried.column_names:
                setattr(self, name, getattr(self, name) + (pc.sum(carried[column]).as_py() or 0))
        self.prompt_tokens += pc.sum(generated[C.NUM_INPUT_TOKENS]).as_py() or 0
        self.output_tokens += pc.sum(generated[C.NUM_OUTPUT_TOKENS]).as_py() or 0
        measured = generated.filter(pc.is_valid(generated[C.NUM_CACHED_TOKENS]))
        self.measured_rows += measured.num_rows
        self.cached += pc.sum(measured[C.NUM_CACHED_TOKENS]).as_py() or 0
        self.measured_prompt += pc.sum(measured[C.NUM_INPUT_TOKENS]).as_py() or 0
        if generated.num_rows:
            grouped = generated.group_by(C.CHANNEL, use_threads=False).aggregate(
                [
                    (C.NUM_INPUT_TOKENS, "sum"),
                    (C.NUM_INPUT_TOKENS, "count"),
                    (C.NUM_OUTPUT_TOKENS, "sum"),
                    (C.NUM_OUTPUT_TOKENS, "count"),
                ]
            )
            for row in grouped.to_pylist():
                sums = self.channel_sums.setdefault(row[C.CHANNEL], [0, 0, 0, 0])
                for k, name in enumerate(
                    (
                        f"{C.NUM_INPUT_TOKENS}_sum",
                        f"{C.NUM_INPUT_TOKENS}_count",
                        f"{C.NUM_OUTPUT_TOKENS}_sum",
                        f"{C.NUM_OUTPUT_TOKENS}_count",
                    )
                ):
                    sums[k] += row[name] or 0

    def __iadd__(self, other: WorkTally) -> WorkTally:
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for channel, sums in other.channel_sums.items():
            mine = self.channel_sums.setdefault(channel, [0, 0, 0, 0])
            for k, v in enumerate(sums):
                mine[k] += v
        return self

    def state(self) -> dict:
        """The sums as plain JSON values (a file footer keeps them, ``factory/footer.py``)."""
        return {**{name: getattr(self, name) for name in self._FIELDS}, "channel_sums": self.channel_sums}

    @classmethod
    def from_state(cls, state: dict) -> WorkTally:
        tally = cls()
        for name in cls._FIELDS:
            setattr(tally, name, state[name])
        tally.channel_sums = {k: list(v) for k, v in state["channel_sums"].items()}
        return tally

    def figures(self) -> dict:
        total = self.n_gen + self.n_reused
        per_channel = {
            ch: {
                "mean_prompt_tokens": round(s[0] / s[1], 1) if s[1] else None,
                "mean_output_tokens": round(s[2] / s[3], 1) if s[3] else None,
            }
            for ch, s in sorted(self.channel_sums.items(), key=lambda kv: str(kv[0]))
        }
        return {
            "rows_generated": self.n_gen,
            "rows_reused": self.n_reused,
            "reused_share": round(self.n_reused / total, 4) if total else 0.0,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "tokens_saved_by_reuse": {"prompt": self.saved_prompt, "output": self.saved_output},
            # Share of prompt tokens vLLM's prefix cache served, over the rows
            # whose engine reported it (null when none did).
            "prefix_cache_hit_rate": round(self.cached / self.measured_prompt, 4)
            if self.measured_prompt
            else None,
            "prefix_cache_rows_measured": self.measured_rows,
            "by_channel": per_channel,
        }
