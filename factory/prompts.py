"""Per-channel prompt templates: loading, versioning and rendering.

A template is a YAML file in ``factory/templates/`` (or a folder the user
names). Its version is a hash of the file's bytes, so any edit, even a comma,
gives a new version, and every output row says which text produced it.

Only the fields a template names reach the model: the renderer builds each
prompt from exactly those placeholders, and a template that names a field not
on the allow-list (``user_id`` above all) fails to load.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from factory.errors import UsageError
from factory.quality import pii

BUILTIN_TEMPLATE_DIR = Path(__file__).parent / "templates"

PRODUCT_FIELDS = frozenset(
    {"title", "brand", "category", "price", "description", "attributes", "selling_points", "facts"}
)
USER_FIELDS = frozenset(
    {"interests", "recent_views", "recent_searches", "recent_purchases", "age_band", "loyalty_tier"}
)
DERIVED_FIELDS = frozenset({"language"})
# One value per run, set by the campaign (not by a row), so it may stand only in
# the system prompt: the shared prefix stays the same for every row.
CAMPAIGN_FIELDS = frozenset({"brand_voice", "offers"})
ALLOWED_FIELDS = PRODUCT_FIELDS | USER_FIELDS | DERIVED_FIELDS | CAMPAIGN_FIELDS
BRAND_VOICE = "brand_voice"
# How a campaign's brand voice reads in the system prompt; nothing at all without one.
BRAND_VOICE_LINE = "Brand voice: {}."
OFFERS = "offers"
# How a campaign's declared offers read in the system prompt: the model may
# state them (the gate rejects any other offer); nothing at all without any.
OFFERS_LINE = "Offers you may mention, as written: {}. Make no other offer."

# Untrusted free text is cut so one huge description cannot crowd out the rest
# of the prompt (or the model's context).
MAX_FIELD_CHARS = 400
MAX_LIST_ITEMS = 5

LANGUAGES = {
    "en": "English",
    "zh": "Simplified Chinese",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "ja": "Japanese",
    "nl": "Dutch",
    "pt": "Portuguese",
}

_ANGLE_BRACKETS = str.maketrans({"<": "‹", ">": "›"})

_REQUIRED_KEYS = ("channel", "max_chars", "max_tokens", "system", "user")


class TemplateError(UsageError):
    """A template file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class PromptTemplate:
    channel: str
    version: str
    max_chars: int
    max_tokens: int
    system: str
    user: str
    fields: frozenset[str]
    source: str
    # Worked examples as earlier chat turns: (user, assistant) pairs. Small
    # models follow a shown answer far better than a described one, and the
    # turns sit in the shared prefix, so the prefix cache makes them cheap.
    examples: tuple[tuple[str, str], ...] = ()
    # Strings that end generation (vLLM stop strings), e.g. a newline for one-line channels.
    stop: tuple[str, ...] = ()
    # The campaign's tone / brand voice for {brand_voice}; "" renders nothing.
    brand_voice: str = ""
    # The campaign's declared offers (their text) for {offers}; none renders nothing.
    offers: tuple[str, ...] = ()
    # The version of the file alone; ``version`` also covers the brand voice and offers.
    file_version: str = ""

    def with_brand_voice(self, voice: str | None) -> PromptTemplate:
        """This template for a campaign with this brand voice (offers kept)."""
        return self.with_campaign(voice, self.offers)

    def with_campaign(self, voice: str | None, offers: Sequence[str] = ()) -> PromptTemplate:
        """This template for a campaign with this brand voice and these
        offers. The version covers both: the same file with another voice or
        other offers is another prompt, and the output rows must say so."""
        voice, offers = voice or "", tuple(offers)
        file_version = self.file_version or self.version
        if not voice and not offers:
            return replace(self, brand_voice="", offers=(), version=file_version, file_version=file_version)
        key = f"{file_version}\x00{voice}" + ("".join(f"\x00{o}" for o in offers) if offers else "")
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return replace(
            self,
            brand_voice=voice,
            offers=offers,
            version=f"{self.channel}@{digest}",
            file_version=file_version,
        )

    def render(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages for one row. ``values`` may hold more than the template
        names; only the named fields are formatted in."""
        context = {
            name: format_value(name, values.get(name)) for name in self.fields if name not in CAMPAIGN_FIELDS
        }
        if BRAND_VOICE in self.fields:
            context[BRAND_VOICE] = format_brand_voice(self.brand_voice)
        if OFFERS in self.fields:
            context[OFFERS] = format_offers(self.offers)
        messages = [{"role": "system", "content": self.system.format_map(context).strip()}]
        for user, assistant in self.examples:
            messages.append({"role": "user", "content": user.strip()})
            messages.append({"role": "assistant", "content": assistant.strip()})
        messages.append({"role": "user", "content": self.user.format_map(context).strip()})
        return messages


def language_for(locale: str | None) -> str:
    """``zh-CN`` -> ``Simplified Chinese``; unknown locales fall back to English."""
    lang = (locale or "en").replace("_", "-").split("-")[0].lower()
    return LANGUAGES.get(lang, "English")


def format_value(name: str, value: Any) -> str:
    """How one field reads inside a prompt: lists as comma lists, maps as
    ``key: value`` pairs, money with its currency, long text cut."""
    if name == "language":
        return language_for(value)
    if name == "facts":  # JSON (factory.facts): "Folds flat; Machine washable; color: white"
        from factory.facts.schema import facts_text

        value = facts_text(value) or None
    if value is None:
        return "none"
    if hasattr(value, "tolist"):  # numpy arrays from Ray batches
        value = value.tolist()
    if isinstance(value, str) and name == "attributes":
        value = _maybe_json(value)
    if isinstance(value, Mapping):
        text = "; ".join(f"{k}: {v}" for k, v in value.items() if v not in (None, ""))
    elif isinstance(value, (list, tuple)):
        if value and isinstance(value[0], (list, tuple)) and len(value[0]) == 2:  # map as pairs
            text = "; ".join(f"{k}: {v}" for k, v in value)
        else:
            text = ", ".join(str(v) for v in value[:MAX_LIST_ITEMS] if v not in (None, ""))
    else:
        text = str(value)
    text = " ".join(text.split())  # one line: no injected newlines that fake prompt structure
    # Untrusted text cannot close the <product> block (or open a fake one).
    text = text.translate(_ANGLE_BRACKETS)
    if name in USER_FIELDS:
        # A profile built from searches can hold an e-mail or phone number;
        # the model never sees one, so it cannot repeat one.
        text = pii.scrub(text)
    if len(text) > MAX_FIELD_CHARS:
        text = text[: MAX_FIELD_CHARS - 1].rstrip() + "…"
    return text or "none"


def format_brand_voice(voice: str | None) -> str:
    """The campaign's brand voice as one line of the system prompt, held to the
    rules of untrusted text (one line, no angle brackets, no contact details,
    cut); empty without one, so the prompt is then exactly the template's."""
    if not voice:
        return ""
    text = pii.scrub(" ".join(str(voice).split()).translate(_ANGLE_BRACKETS))
    if len(text) > MAX_FIELD_CHARS:
        text = text[: MAX_FIELD_CHARS - 1].rstrip() + "…"
    return BRAND_VOICE_LINE.format(text.rstrip(".")) if text else ""


def format_offers(offers: Sequence[str]) -> str:
    """The campaign's offers as one line of the system prompt, each held to
    the rules of untrusted text like the brand voice; empty without any."""
    parts = []
    for offer in offers:
        text = pii.scrub(" ".join(str(offer).split()).translate(_ANGLE_BRACKETS)).rstrip(".;")
        if text:
            parts.append(text[:MAX_FIELD_CHARS])
    return OFFERS_LINE.format("; ".join(parts)) if parts else ""


def apply_campaign(
    templates: Mapping[str, PromptTemplate], voice: str | None, offers: Sequence[str], channels: Iterable[str]
) -> dict[str, PromptTemplate]:
    """The templates for a run with this brand voice and these declared
    offers (their text). A voice or offers the run's templates cannot carry
    is a mistake, not something to drop silently: an offer the model is never
    shown is one the gate would reject in every copy that makes it."""
    channels = list(channels)
    for value, field in ((voice, BRAND_VOICE), (offers, OFFERS)):
        if not value:
            continue
        missing = [
            templates[c].source for c in channels if c in templates and field not in templates[c].fields
        ]
        if missing:
            raise TemplateError(
                f"{field} is set but {', '.join(missing)} has no {{{field}}} placeholder in 'system'; "
                "add it on a line of its own"
            )
    return {c: t.with_campaign(voice, offers) for c, t in templates.items()}


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_price(price: Any, currency: Any) -> str:
    if price is None:
        return "none"
    return f"{float(price):.2f} {currency or ''}".strip()


def load_template(path: Path) -> PromptTemplate:
    raw = path.read_bytes()
    try:
        spec = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(spec, dict):
        raise TemplateError(f"{path}: expected a mapping with keys {', '.join(_REQUIRED_KEYS)}")
    missing = [k for k in _REQUIRED_KEYS if k not in spec]
    if missing:
        raise TemplateError(f"{path}: missing key(s) {', '.join(missing)}")
    fields: set[str] = set()
    for part in ("system", "user"):
        for _, name, _, _ in string.Formatter().parse(spec[part]):
            if name is None:
                continue
            if name not in ALLOWED_FIELDS:
                raise TemplateError(
                    f"{path}: placeholder {{{name}}} in '{part}' is not an allowed field "
                    f"(allowed: {', '.join(sorted(ALLOWED_FIELDS))})"
                )
            if name in CAMPAIGN_FIELDS and part != "system":
                raise TemplateError(
                    f"{path}: placeholder {{{name}}} belongs in 'system' (one value per "
                    "campaign, so the prompt prefix the engine caches stays shared)"
                )
            fields.add(name)
    examples = []
    for i, ex in enumerate(spec.get("examples") or []):
        if not isinstance(ex, dict) or not {"user", "assistant"} <= set(ex):
            raise TemplateError(f"{path}: examples[{i}] needs 'user' and 'assistant'")
        examples.append((str(ex["user"]), str(ex["assistant"])))
    channel = str(spec["channel"])
    if channel != path.stem:
        raise TemplateError(f"{path}: channel {channel!r} must match the file name {path.stem!r}")
    version = f"{channel}@{hashlib.sha256(raw).hexdigest()[:12]}"
    return PromptTemplate(
        channel=channel,
        version=version,
        file_version=version,
        max_chars=int(spec["max_chars"]),
        max_tokens=int(spec["max_tokens"]),
        system=spec["system"],
        user=spec["user"],
        fields=frozenset(fields),
        source=str(path),
        examples=tuple(examples),
        stop=tuple(str(x) for x in (spec.get("stop") or [])),
    )


def load_templates(template_dir: str | Path | None = None) -> dict[str, PromptTemplate]:
    """All templates in a folder, keyed by channel."""
    folder = Path(template_dir) if template_dir else BUILTIN_TEMPLATE_DIR
    templates = {t.channel: t for t in (load_template(p) for p in sorted(folder.glob("*.yaml")))}
    if not templates:
        raise TemplateError(f"{folder}: no *.yaml templates found")
    return templates
