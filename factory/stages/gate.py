"""The quality gate: a verdict and its reasons on every generated row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import regex

from factory import columns as C
from factory.lookup import KeyIndex
from factory.progress import count_finished
from factory.prompts import PromptTemplate
from factory.quality.contacts import profile_names
from factory.quality.policy import Offer, QualityPolicy
from factory.quality.rules import Copy, ProductFacts, RuleBook
from factory.quality.text import gsm_friendly
from factory.ray_session import deref
from factory.stages.finalize import clean_text

# The user's profile text, as the row carries it (pass 1 attached the user; the passes keep these columns).
_PROFILE_TEXT_FIELDS = C.USERS_LIST_FIELDS
# Read only for the names in its address, where a row has one: a copy that
# greets "Jane" learned it from somewhere the prompt never showed (profile
# fields are scrubbed).
_PROFILE_EMAIL_FIELDS = ("email",)
_PLACEHOLDER = regex.compile(r"\{[a-z_]+\}")
_PRODUCT_BLOCK = regex.compile(r"<product>.*?</product>", regex.DOTALL)
_STRING_LIST = pa.list_(pa.string())
# Products' facts and users' profile text kept per actor (each cache is
# cleared when it would pass this many rows).
_CACHED_ROWS = 50_000


def prompt_texts(templates: Mapping[str, PromptTemplate]) -> tuple[list[str], list[str]]:
    """The fixed wording of the prompts, and the products of their worked examples.

    Placeholders and the examples' product blocks split the wording: data is
    not wording, and no run of words may span a gap. An example's product is
    the block's text up to " by " (the templates' own convention)."""
    from factory.stages.render import REPAIR_REQUIREMENTS

    # The repair prompt's requirements count as wording too: a small model
    # told "Do not use these words: free" likes to write exactly that.
    instructions = [p for text in REPAIR_REQUIREMENTS.values() for p in _PLACEHOLDER.split(text)]
    instructions.append("Requirements:")
    example_products = []
    for t in templates.values():
        for text in (t.system, t.user, *(u for u, _ in t.examples)):
            for piece in _PRODUCT_BLOCK.split(text):
                instructions.extend(_PLACEHOLDER.split(piece))
        for user, _ in t.examples:
            for block in _PRODUCT_BLOCK.findall(user):
                title = block[len("<product>") :].split(" by ")[0].split(",")[0].strip()
                if title:
                    example_products.append(title)
    return instructions, example_products


class QualityGate:
    """Cleans each copy, runs every rule and adds the verdict columns.

    ``status`` is ``rejected`` if any finding's severity is reject, else
    ``review`` if any is review, else ``accepted``. On the first draft a
    rejected row is routed to the repair queue when the policy repairs.
    The products table arrives once per actor, indexed once; each row
    carries its user's profile (``C.USERS_LIST_FIELDS``).

    With a progress ``counter`` (an actor handle) each judged block is
    reported as it leaves: the gate already holds the finished rows, and a
    stage of its own would be one more process sharing the engine's cores.
    """

    def __init__(
        self,
        products: pa.Table,
        policy: QualityPolicy,
        templates: Mapping[str, PromptTemplate],
        draft: int = 1,
        counter: Any = None,
        offers: Sequence[Offer] = (),
        competitors: Sequence[str] = (),
    ):

        products = deref(products)
        self._policy = policy
        self._draft = draft
        self._counter = counter
        instructions, answers = prompt_texts(templates)
        self._book = RuleBook(
            policy,
            instructions,
            answers,
            brands=products["brand"].to_pylist(),
            offers=offers,
            competitors=competitors,
        )
        self._products = products
        self._product_index = KeyIndex(products[C.PRODUCT_ID])
        self._facts: dict[int, ProductFacts] = {}
        self._profiles: dict[str, tuple[str, frozenset[str]]] = {}

    def _load_facts(self, indexes: list) -> dict[int, ProductFacts]:
        """The batch's products as facts, built once per actor: the rows not
        seen yet are read in one ``take`` (one ``as_py`` per value cost more
        than every rule together)."""
        missing = _missing(self._facts, indexes)
        if missing:
            fields = [f for f in C.PRODUCT_FIELDS if f in self._products.column_names]
            records = self._products.select(fields).take(pa.array(missing, pa.int64())).to_pylist()
            self._facts.update(zip(missing, map(ProductFacts.from_record, records)))
        return self._facts

    def _load_profiles(self, batch: pa.Table, user_ids: list) -> dict[str, tuple[str, frozenset[str]]]:
        """The batch's users' profile text (lower-cased) and the names in
        their e-mail addresses, from the columns the rows carry, built once
        per user and actor like ``_load_facts``."""
        missing = _missing(self._profiles, user_ids)
        if missing:
            profile = [f for f in _PROFILE_TEXT_FIELDS if f in batch.column_names]
            emails = [f for f in _PROFILE_EMAIL_FIELDS if f in batch.column_names]
            first: dict[str, int] = {}
            for i, user in enumerate(user_ids):
                first.setdefault(user, i)
            at = pa.array([first[u] for u in missing], pa.int64())
            records = batch.select(profile + emails).take(at).to_pylist()
            for user, record in zip(missing, records):
                parts, addresses = [], []
                for f in profile + emails:
                    value = record[f]
                    (parts if f in profile else addresses).extend(
                        value if isinstance(value, list) else [value]
                    )
                text = "\n".join(str(p) for p in parts if p).lower()
                names = profile_names("\n".join(str(p) for p in parts + addresses if p))
                self._profiles[user] = (text, names)
        return self._profiles

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        product_idx = self._product_index.positions(batch[C.PRODUCT_ID]).to_pylist()
        texts = batch[C.TEXT].to_pylist()
        channels, locales = batch[C.CHANNEL].to_pylist(), batch[C.LOCALE].to_pylist()
        user_ids = batch[C.USER_ID].to_pylist()
        finish = batch[C.FINISH_REASON].to_pylist() if C.FINISH_REASON in batch.column_names else [None] * n

        out: dict[str, list[Any]] = {
            k: []
            for k in (
                C.TEXT,
                C.STATUS,
                C.REASONS,
                C.REASON_DETAILS,
                C.NUMERIC_FIDELITY,
                C.COPY_LENGTH,
                C.COPY_LENGTH_LIMIT,
                C.ROUTE,
            )
        }
        all_facts, profiles = self._load_facts(product_idx), self._load_profiles(batch, user_ids)
        no_facts = ProductFacts.from_record({})
        no_profile = ("", frozenset())
        for i in range(n):
            text = clean_text(texts[i])
            if self._policy.limits_for(channels[i]).unit == "sms_segments":
                text = gsm_friendly(text)  # a curly quote must not turn the SMS into UCS-2
            facts = all_facts[product_idx[i]] if product_idx[i] is not None else no_facts
            user_source, user_names = profiles[user_ids[i]] if user_ids[i] is not None else no_profile
            copy = Copy(
                text=text,
                channel=channels[i],
                locale=locales[i],
                product=facts,
                user_id=user_ids[i],
                finish_reason=finish[i],
                user_source=user_source,
                user_names=user_names,
                raw=None if (texts[i] or "").isascii() else texts[i],
            )
            m = self._book.check(copy)
            severities = {f.code: self._policy.severity_of(f.code) for f in m.findings}
            kept = [f for f in m.findings if severities[f.code] != "off"]
            if any(severities[f.code] == "reject" for f in kept):
                status = C.REJECTED
            elif kept:
                status = C.REVIEW
            else:
                status = C.ACCEPTED
            repair = status == C.REJECTED and self._draft == 1 and self._policy.repair
            out[C.TEXT].append(text)
            out[C.STATUS].append(status)
            out[C.REASONS].append(list(dict.fromkeys(f.code for f in kept)))
            out[C.REASON_DETAILS].append([f"{f.code}: {f.detail}" for f in kept])
            out[C.NUMERIC_FIDELITY].append(m.numeric_fidelity)
            out[C.COPY_LENGTH].append(m.length)
            out[C.COPY_LENGTH_LIMIT].append(m.length_limit)
            out[C.ROUTE].append(C.ROUTE_REPAIR if repair else C.ROUTE_COPIES)

        types = {
            C.REASONS: _STRING_LIST,
            C.REASON_DETAILS: _STRING_LIST,
            C.NUMERIC_FIDELITY: pa.float64(),
            C.COPY_LENGTH: pa.int32(),
            C.COPY_LENGTH_LIMIT: pa.int32(),
        }
        for name, values in out.items():
            array = pa.array(values, types.get(name, pa.string()))
            if name in batch.column_names:
                batch = batch.set_column(batch.column_names.index(name), name, array)
            else:
                batch = batch.append_column(name, array)
        if C.DRAFT not in batch.column_names:
            batch = batch.append_column(C.DRAFT, pa.array([self._draft] * n, pa.int32()))
        if self._counter is not None:
            count_finished(batch, self._counter)
        return batch


def _missing(cache: dict, indexes: list) -> list:
    """The indexes (or ids) the batch needs that ``cache`` lacks. A cache that would
    pass ``_CACHED_ROWS`` is emptied first (then the batch needs them all),
    so a huge catalog cannot grow the actor."""
    wanted = {i for i in indexes if i is not None}
    missing = wanted - cache.keys()
    if missing and len(cache) + len(missing) > _CACHED_ROWS:
        cache.clear()
        missing = wanted
    return sorted(missing)
