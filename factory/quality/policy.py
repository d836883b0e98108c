"""What the gate enforces: per-channel limits, lexicon additions, severities.

Every rule has a reason code (the strings below; they are what the output's
``reasons`` column holds) and a severity: ``reject`` (the copy must not be
sent; a repair is attempted), ``review`` (a person should look) or ``off``.
A campaign changes any of it in its config's ``quality:`` section; the
defaults are the platforms' published limits and a conservative lexicon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# --- Reason codes ------------------------------------------------------------------
LENGTH_EXCEEDED = "length_exceeded"
TOO_SHORT = "too_short"
BANNED_CLAIM = "banned_claim"
RISKY_CLAIM = "risky_claim"
UNSUPPORTED_NUMBER = "unsupported_number"
UNSUPPORTED_MATERIAL = "unsupported_material"
PERSONAL_DATA = "personal_data"
USER_IDENTIFIER = "user_identifier"
FOREIGN_URL = "foreign_url"
SOURCE_URL = "url_from_source"
FOREIGN_BRAND = "foreign_brand"
INJECTION_TRACE = "injection_trace"
REFUSAL = "refusal"
TEMPLATE_LEAK = "template_leak"
CHATTER = "chatter"
MULTIPLE_OPTIONS = "multiple_options"
EMPTY = "empty"
TRUNCATED = "truncated"
REPETITION = "repetition"
WRONG_LANGUAGE = "wrong_language"
DISGUISED_TEXT = "disguised_text"
CONTACT_HANDLE = "contact_handle"
UNDECLARED_OFFER = "undeclared_offer"
HEALTH_CLAIM = "health_claim"
RANKING_CLAIM = "ranking_claim"
COMPETITOR = "competitor"
# The model judge's findings (factory/stages/judge.py).
UNSUPPORTED_CLAIM = "unsupported_claim"
OFF_TOPIC = "off_topic"

Severity = Literal["reject", "review", "off"]

DEFAULT_SEVERITY: dict[str, Severity] = {
    LENGTH_EXCEEDED: "reject",
    TOO_SHORT: "reject",
    BANNED_CLAIM: "reject",
    RISKY_CLAIM: "review",
    UNSUPPORTED_NUMBER: "reject",
    # Material words are a short fixed list; a miss is more often a synonym
    # than an invention, so a person decides.
    UNSUPPORTED_MATERIAL: "review",
    PERSONAL_DATA: "reject",
    USER_IDENTIFIER: "reject",
    FOREIGN_URL: "reject",
    # Product descriptions are untrusted: a link copied out of one is how an
    # injected "visit this site" reaches customers. Links are added downstream.
    SOURCE_URL: "reject",
    # Catalog brand names can be ordinary words ("Stride"); a person decides.
    FOREIGN_BRAND: "review",
    INJECTION_TRACE: "reject",
    REFUSAL: "reject",
    TEMPLATE_LEAK: "reject",
    CHATTER: "reject",
    MULTIPLE_OPTIONS: "reject",
    EMPTY: "reject",
    TRUNCATED: "reject",
    REPETITION: "reject",
    WRONG_LANGUAGE: "reject",
    # Invisible or look-alike characters only ever hide something from a
    # filter or change what a reader sees; a redraw is cheap.
    DISGUISED_TEXT: "reject",
    CONTACT_HANDLE: "reject",
    # An offer is a promise the shop must honour: only the campaign makes one.
    UNDECLARED_OFFER: "reject",
    HEALTH_CLAIM: "reject",
    RANKING_CLAIM: "reject",
    COMPETITOR: "reject",
    # A small judge model is a second opinion, not proof: a person decides.
    UNSUPPORTED_CLAIM: "review",
    OFF_TOPIC: "review",
}
REASON_CODES = tuple(DEFAULT_SEVERITY)

Unit = Literal["graphemes", "display_width", "sms_segments"]

# What a campaign can offer; the lexicon's ``offers:`` section lists how copy
# says each. Copy that makes an offer of a kind the campaign did not declare
# (and the product's facts do not state) is rejected.
OfferKind = Literal["discount", "free_shipping", "warranty", "bogo", "money_back", "gift"]
OFFER_KINDS: tuple[str, ...] = OfferKind.__args__
MAX_OFFER_CHARS = 120


class Offer(BaseModel):
    """One offer a campaign makes, e.g. ``{kind: discount, text: "20% off knitwear with code WARM20"}``."""

    model_config = ConfigDict(extra="forbid")

    kind: OfferKind = Field(
        description="discount (any price reduction, sale price, coupon or code), "
        "free_shipping, warranty, bogo (buy one get one), money_back "
        "(refunds, free returns) or gift (a free gift with purchase)."
    )
    text: str = Field(
        min_length=3,
        max_length=MAX_OFFER_CHARS,
        description="The offer as copy may state it; shown to the model in the system prompt. "
        "Its numbers (20%, 50 USD) become numbers the copy may use.",
    )

    @field_validator("text")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = " ".join(value.split())
        if len(value) < 3:
            raise ValueError("empty offer text")
        return value


class ChannelLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: Unit = Field(
        description="How the channel counts: graphemes, display_width "
        "(wide characters count 2, as ad platforms do) or sms_segments."
    )
    max: int = Field(gt=0, description="Most units allowed (for sms_segments: segments).")
    min: int = Field(default=1, ge=0, description="Fewest graphemes a usable copy has.")
    single_line: bool = Field(default=True, description="Copy must be one line (one option, not a list).")


# Published limits. Push: Android vendor channels cut or reject bodies past
# 100-200 characters; 100 keeps one line on a lock screen. Email subject: a
# phone shows about 35-60. Google Ads: a headline is 30, CJK counting double.
# SMS: one segment (160 GSM-7 septets or 70 UCS-2 units).
DEFAULT_LIMITS: dict[str, dict] = {
    "push": {"unit": "graphemes", "max": 100},
    "email_subject": {"unit": "graphemes", "max": 60, "min": 3},
    "ad_headline": {"unit": "display_width", "max": 30, "min": 3},
    "sms": {"unit": "sms_segments", "max": 1},
    "product_blurb": {"unit": "graphemes", "max": 280, "min": 20, "single_line": False},
}
FALLBACK_LIMITS = {"unit": "graphemes", "max": 280, "single_line": False}

LEXICON_FILE = Path(__file__).parent / "lexicon.yaml"


class QualityPolicy(BaseModel):
    """The gate's settings for one run (one campaign)."""

    model_config = ConfigDict(extra="forbid")

    limits: dict[str, ChannelLimits] = Field(
        default_factory=dict,
        description="Per-channel limits; a channel named here overrides the default only in the keys given.",
    )
    banned_terms: list[str] = Field(default_factory=list, description="Extra terms that reject a copy.")
    risky_terms: list[str] = Field(
        default_factory=list, description="Extra terms that send a copy to review."
    )
    allowed_terms: list[str] = Field(
        default_factory=list,
        description="Terms that never trip the lexicon in this campaign (a sub-brand, a slogan).",
    )
    severity: dict[str, Severity] = Field(
        default_factory=dict, description="Per reason code: reject, review or off."
    )
    repair: bool = Field(
        default=True, description="Regenerate rejected rows once, with the reasons fed back."
    )
    repair_temperature: float = Field(
        default=0.8,
        ge=0.0,
        le=2.0,
        description="Sampling temperature of the repair attempt (a different draw).",
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_limits(cls, data):
        """Partial limits (``sms: {max: 2}``) are laid over the channel's defaults."""
        if isinstance(data, dict):
            given = data.get("limits") or {}
            if not isinstance(given, dict):
                raise ValueError("limits must map a channel to its limits")
            merged = {ch: dict(spec) for ch, spec in DEFAULT_LIMITS.items()}
            for ch, spec in given.items():
                if not isinstance(spec, dict):
                    raise ValueError(f"limits.{ch} must be a mapping (unit, max, min, single_line)")
                merged[ch] = {**merged.get(ch, FALLBACK_LIMITS), **spec}
            data = {**data, "limits": merged}
        return data

    @field_validator("severity")
    @classmethod
    def _known_codes(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(REASON_CODES))
        if unknown:
            raise ValueError(f"unknown reason code(s) {', '.join(unknown)}; known: {', '.join(REASON_CODES)}")
        return value

    def limits_for(self, channel: str) -> ChannelLimits:
        return self.limits.get(channel) or ChannelLimits(**FALLBACK_LIMITS)

    def severity_of(self, code: str) -> Severity:
        return self.severity.get(code, DEFAULT_SEVERITY[code])


def load_lexicon(path: Path = LEXICON_FILE) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)
