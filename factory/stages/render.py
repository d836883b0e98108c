"""Render each row's chat prompt from its channel's versioned template."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Optional

import pyarrow as pa

from factory import columns as C
from factory.prompts import PromptTemplate, format_price

# Templates set token caps for English. Byte-level tokenizers spend about two
# tokens per Chinese character (SmolLM2: 13 characters -> 24 tokens) against
# about 0.3 per English one, and Chinese copy is about half as many
# characters for the same message: twice the cap. Without it most Chinese
# copies were cut off mid-phrase (3x was tried: longer rambling, no gain).
_CJK_TOKEN_FACTOR = 2


def tokens_per_char_factor(locale: Optional[str]) -> int:
    lang = (locale or "").replace("_", "-").split("-")[0].lower()
    return _CJK_TOKEN_FACTOR if lang in ("zh", "ja", "ko") else 1


class RenderPrompts:
    """Adds the chat messages (JSON), the token cap and the template version.

    Only the fields the row's template names are read from the row, so a
    profile field no template mentions never reaches the model.
    """

    def __init__(
        self,
        templates: Mapping[str, PromptTemplate],
        max_tokens: Optional[int] = None,
        arm_templates: Optional[Mapping[str, Mapping[str, PromptTemplate]]] = None,
    ):
        # max_tokens, when given, overrides every channel's own cap. arm_templates:
        # per experiment arm, its templates (a row's ``arm`` picks them).
        self._templates = dict(templates)
        self._max_tokens = max_tokens
        self._arms = {arm: dict(t) for arm, t in (arm_templates or {}).items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        every = [*self._templates.values(), *(t for arm in self._arms.values() for t in arm.values())]
        needed = set().union(*(t.fields for t in every)) - {"language", "price"}
        cols = {name: batch[name].to_pylist() for name in needed if name in batch.column_names}
        channels = batch[C.CHANNEL].to_pylist()
        arms = (
            batch[C.ARM].to_pylist() if self._arms and C.ARM in batch.column_names else [None] * len(channels)
        )
        locales = batch[C.LOCALE].to_pylist()
        prices, currencies = batch["price"].to_pylist(), batch["currency"].to_pylist()

        messages, caps, versions, stops = [], [], [], []
        for i, channel in enumerate(channels):
            template = self._arms.get(arms[i], self._templates)[channel]
            values = {name: col[i] for name, col in cols.items()}
            values["language"] = locales[i]
            values["price"] = format_price(prices[i], currencies[i])
            messages.append(json.dumps(template.render(values), ensure_ascii=False))
            caps.append(self._max_tokens or template.max_tokens * tokens_per_char_factor(locales[i]))
            versions.append(template.version)
            stops.append(list(template.stop))
        return (
            batch.append_column(C.MESSAGES, pa.array(messages, pa.string()))
            .append_column(C.MAX_TOKENS, pa.array(caps, pa.int32()))
            .append_column(C.STOP, pa.array(stops, pa.list_(pa.string())))
            .append_column(C.TEMPLATE_VERSION, pa.array(versions, pa.string()))
        )


# What the repair prompt adds, per reason code of the first draft. Phrased
# as requirements of the request, not as talk about a previous answer: a
# small model told "your previous answer was cut off" writes about that.
REPAIR_REQUIREMENTS = {
    "length_exceeded": "It must be at most {limit} characters.",
    "too_short": "Write a complete message.",
    "multiple_options": "Write exactly one, on one line.",
    "truncated": "Keep it short and end with a full stop.",
    "banned_claim": "Do not use these words: {detail}.",
    "risky_claim": "Do not use these words: {detail}.",
    "unsupported_number": "Use no numbers except those in the <product> block.",
    "unsupported_material": "Name no material that the <product> block does not name.",
    "personal_data": "Include no contact details.",
    "user_identifier": "Include no customer id.",
    "foreign_url": "Include no links.",
    "url_from_source": "Include no links.",
    "foreign_brand": "Name no brand except {brand}.",
    "injection_trace": "Write only about the product.",
    "refusal": "Write the marketing copy itself.",
    "template_leak": "Write new copy for this product only.",
    "chatter": "Start directly with the copy.",
    "empty": "Write the copy.",
    "repetition": "Say each thing once.",
    "wrong_language": "Write it in {language} only.",
    "disguised_text": "Use plain letters and no hidden characters.",
    "contact_handle": "Include no contact details or social media accounts.",
    "undeclared_offer": "Promise no other discount, free shipping, warranty, refund or gift.",
    "health_claim": "Make no health, medical or skin claims.",
    "ranking_claim": "Claim no rankings, awards, sales figures or endorsements.",
    "competitor": "Name no brand except {brand}.",
    "unsupported_claim": "State only facts from the <product> block.",
    "off_topic": "Write about this product for this customer.",
}


def repair_requirements(
    details: list[str], locale: Optional[str], limit: Optional[int] = None, brand: Optional[str] = None
) -> str:
    """The first draft's failures as requirements, one sentence per reason."""
    from factory.prompts import language_for

    lines = []
    for item in details:
        code, _, detail = item.partition(": ")
        hint = REPAIR_REQUIREMENTS.get(code)
        if hint is None:
            continue
        if code in ("banned_claim", "risky_claim"):
            detail = ", ".join(re.findall(r"'([^']+)'", detail)) or detail
        line = hint.format(
            detail=detail,
            language=language_for(locale),
            limit=limit or "the allowed number of",
            brand=brand or "the product's own",
        )
        if line not in lines:
            lines.append(line)
    return ("Requirements: " + " ".join(lines)) if lines else ""


class RenderRepair:
    """The second draft's prompt: the first chat, with the reasons the first
    copy was rejected added to the final request as requirements. The system
    prompt and the worked examples are unchanged, so the prefix cache still
    serves them.

    The first draft's reason codes move to ``first_draft_reasons``; its
    text and verdict are dropped (the gate writes new ones).
    """

    def __call__(self, batch: pa.Table) -> pa.Table:
        chats = batch[C.MESSAGES].to_pylist()
        details = batch[C.REASON_DETAILS].to_pylist()
        locales = batch[C.LOCALE].to_pylist()
        limits = (
            batch[C.COPY_LENGTH_LIMIT].to_pylist()
            if C.COPY_LENGTH_LIMIT in batch.column_names
            else [None] * batch.num_rows
        )
        brands = batch["brand"].to_pylist() if "brand" in batch.column_names else [None] * batch.num_rows
        repaired = []
        for chat, why, locale, limit, brand in zip(chats, details, locales, limits, brands):
            messages = json.loads(chat)
            feedback = repair_requirements(why or [], locale, limit, brand)
            if feedback:
                messages[-1]["content"] = f"{messages[-1]['content']}\n{feedback}"
            repaired.append(json.dumps(messages, ensure_ascii=False))
        keep = [
            c
            for c in batch.column_names
            if c
            not in (
                C.MESSAGES,
                C.REASONS,
                C.TEXT,
                C.STATUS,
                C.REASON_DETAILS,
                C.NUMERIC_FIDELITY,
                C.COPY_LENGTH,
                C.COPY_LENGTH_LIMIT,
                C.DRAFT,
                C.ROUTE,
                C.FINISH_REASON,
                C.NUM_INPUT_TOKENS,
                C.NUM_OUTPUT_TOKENS,
                C.JUDGE_VERDICT,
                C.JUDGE_TOKENS,
                "brand",
            )
        ]
        return (
            batch.select(keep)
            .append_column(C.FIRST_DRAFT_REASONS, batch[C.REASONS])
            .append_column(C.MESSAGES, pa.array(repaired, pa.string()))
        )
