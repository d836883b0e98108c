"""One user's events in, one profile row out: a pure function.

``build_profile`` knows nothing about Ray or Parquet, so tests call it on
hand-built event lists and the Ray stage calls it once per user. Everything
it returns is derived (top categories and brands, readable titles, scrubbed
queries, bands); ``PROFILE_SCHEMA`` is the allow-list of what may be written.

Recency weighting: an event's weight is its type's weight times
``0.5 ** (age_days / half_life_days)``, where the age is measured from the
end of the ``as_of`` day (midnight UTC after it). Events are ordered newest
first with a total tie-break, so the same events give the same profile in
any input order.
"""

from __future__ import annotations

import bisect
import datetime as dt
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from factory import columns as C
from factory.quality import pii

VIEW, SEARCH, ADD_TO_CART, PURCHASE = "view", "search", "add_to_cart", "purchase"
EVENT_TYPES = (VIEW, SEARCH, ADD_TO_CART, PURCHASE)
PRODUCT_EVENTS = (VIEW, ADD_TO_CART, PURCHASE)

# Derived profile columns beyond the nightly job's users contract (it ignores them).
INTEREST_SCORES = "interest_scores"
PRICE_BAND = "price_band"
ACTIVITY_LEVEL = "activity_level"
LOYALTY_TIER = "loyalty_tier"

BUDGET, MID, PREMIUM = "budget", "mid", "premium"
INACTIVE, OCCASIONAL, REGULAR, FREQUENT = "inactive", "occasional", "regular", "frequent"

# The allow-list: the only columns a profile file ever has. Raw ids other
# than user_id, free text a person typed (except scrubbed queries) and
# sensitive attributes (age_band, anything else in the users table) are not
# on it, so they cannot reach the output whatever the inputs carry.
INTEREST_SCORE_TYPE = pa.struct([("kind", pa.string()), ("name", pa.string()), ("score", pa.float64())])
PROFILE_SCHEMA = pa.schema(
    [
        (C.USER_ID, pa.string()),
        (C.LOCALE, pa.string()),
        ("interests", pa.list_(pa.string())),
        ("recent_views", pa.list_(pa.string())),
        ("recent_searches", pa.list_(pa.string())),
        ("recent_purchases", pa.list_(pa.string())),
        (LOYALTY_TIER, pa.string()),
        (INTEREST_SCORES, pa.list_(INTEREST_SCORE_TYPE)),
        (PRICE_BAND, pa.string()),
        (ACTIVITY_LEVEL, pa.string()),
    ]
)
PROFILE_FIELDS = tuple(PROFILE_SCHEMA.names)

MICROS_PER_DAY = 86_400_000_000
MAX_QUERY_CHARS = 80  # a search box entry, not a paragraph


class ProfileSettings(BaseModel):
    """How events become a profile. Part of the job config and of the summary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: dt.date = Field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).date(),
        description="The profile's date: events up to the end of this day (UTC) count; "
        "later ones are rejected as future_timestamp. Default: today (UTC).",
    )
    half_life_days: float = Field(
        default=30.0, gt=0, le=3650, description="An event's interest weight halves every this many days."
    )
    recent_n: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Entries kept in recent_views, recent_searches and recent_purchases.",
    )
    top_categories: int = Field(default=3, ge=0, le=20, description="Categories kept in interests.")
    top_brands: int = Field(
        default=2, ge=0, le=20, description="Brands kept in interests (after the categories)."
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: {VIEW: 1.0, ADD_TO_CART: 3.0, PURCHASE: 5.0},
        description="Interest weight per product event type (search has no product, so no weight).",
    )
    activity_window_days: int = Field(
        default=30, ge=1, le=365, description="Days before the as-of date's end counted for activity_level."
    )
    default_locale: str = Field(
        default="en-US", description="Locale of a user the users table does not know."
    )

    @property
    def cutoff_micros(self) -> int:
        """Epoch microseconds of midnight UTC after ``as_of``: the end of the window."""
        end = dt.datetime.combine(self.as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
        return int(end.timestamp()) * 1_000_000


class Event(NamedTuple):
    """One accepted event. ``ts`` is epoch microseconds, UTC."""

    event_type: str
    ts: int
    product_id: Optional[str] = None
    query: Optional[str] = None

    @classmethod
    def at(
        cls, event_type: str, when: str, product_id: Optional[str] = None, query: Optional[str] = None
    ) -> Event:
        """An event at an ISO time (UTC unless it says otherwise); for tests and examples."""
        stamp = dt.datetime.fromisoformat(when)
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.timezone.utc)
        return cls(event_type, int(stamp.timestamp() * 1_000_000), product_id, query)


@dataclass(frozen=True)
class ProductFacts:
    """What a profile may say about a product: no ids, no descriptions."""

    title: Optional[str]
    category: Optional[str]
    brand: Optional[str]
    price_percentile: Optional[float]  # within its (category, currency) in the catalog


@dataclass(frozen=True)
class UserFacts:
    """The users-table fields a profile copies (the rest is never read)."""

    locale: Optional[str] = None
    loyalty_tier: Optional[str] = None


def _order_key(event: Event) -> tuple:
    # Newest first; the rest only makes the order total (equal keys are equal events).
    return (-event.ts, event.event_type, event.product_id or "", event.query or "")


def build_profile(
    user_id: str,
    events: Iterable[Event],
    catalog: Mapping[str, ProductFacts],
    settings: ProfileSettings,
    user: Optional[UserFacts] = None,
) -> dict:
    """The profile row of one user. ``events`` are accepted events (known
    type, known product, not in the future); any order."""
    ordered = sorted(events, key=_order_key)
    user = user or UserFacts()
    scores = interest_scores(ordered, catalog, settings)
    return {
        C.USER_ID: user_id,
        C.LOCALE: user.locale or settings.default_locale,
        "interests": [s["name"] for s in scores],
        "recent_views": recent_titles(ordered, VIEW, catalog, settings.recent_n),
        "recent_searches": recent_queries(ordered, settings.recent_n),
        "recent_purchases": recent_titles(ordered, PURCHASE, catalog, settings.recent_n),
        LOYALTY_TIER: user.loyalty_tier,
        INTEREST_SCORES: scores,
        PRICE_BAND: price_band(ordered, catalog),
        ACTIVITY_LEVEL: activity_level(ordered, settings),
    }


def interest_scores(
    ordered: Sequence[Event], catalog: Mapping[str, ProductFacts], settings: ProfileSettings
) -> list[dict]:
    """Top categories, then top brands, by recency-weighted score (ties by name)."""
    cutoff = settings.cutoff_micros
    by_kind: dict[str, dict[str, float]] = {"category": {}, "brand": {}}
    for e in ordered:
        weight = settings.weights.get(e.event_type, 0.0)
        facts = catalog.get(e.product_id) if e.product_id is not None else None
        if not weight or facts is None:
            continue
        w = weight * 0.5 ** ((cutoff - e.ts) / MICROS_PER_DAY / settings.half_life_days)
        for kind, name in (("category", facts.category), ("brand", facts.brand)):
            if name:
                by_kind[kind][name] = by_kind[kind].get(name, 0.0) + w
    out = []
    for kind, keep in (("category", settings.top_categories), ("brand", settings.top_brands)):
        ranked = sorted(by_kind[kind].items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
        out += [{"kind": kind, "name": name, "score": round(score, 6)} for name, score in ranked]
    return out


def recent_titles(
    ordered: Sequence[Event], event_type: str, catalog: Mapping[str, ProductFacts], n: int
) -> list[str]:
    """The last ``n`` distinct product titles of one event type, newest first."""
    out, seen = [], set()
    for e in ordered:
        if e.event_type != event_type:
            continue
        facts = catalog.get(e.product_id) if e.product_id is not None else None
        title = " ".join(facts.title.split()) if facts is not None and facts.title else ""
        if title and title.casefold() not in seen:
            seen.add(title.casefold())
            out.append(title)
            if len(out) == n:
                break
    return out


def clean_query(query: Optional[str]) -> str:
    """A search query fit to keep: personal data scrubbed, one line, bounded."""
    if not query:
        return ""
    text = pii.scrub(query)
    text = "".join(ch for ch in text if ch.isprintable())
    text = " ".join(text.split())
    return text[:MAX_QUERY_CHARS].rstrip()


def recent_queries(ordered: Sequence[Event], n: int) -> list[str]:
    """The last ``n`` distinct scrubbed queries, newest first (case-insensitive
    dedup; a query that is nothing but personal data is dropped)."""
    out, seen = [], set()
    for e in ordered:
        if e.event_type != SEARCH:
            continue
        text = clean_query(e.query)
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
            if len(out) == n:
                break
    return out


def price_band(ordered: Sequence[Event], catalog: Mapping[str, ProductFacts]) -> Optional[str]:
    """budget / mid / premium from the median catalog percentile of what the
    user bought (each purchase event counts); None with no priced purchase.
    Percentiles are within the product's category and currency, so a band
    means the same in USD and CNY."""
    found = [
        catalog[e.product_id].price_percentile
        for e in ordered
        if e.event_type == PURCHASE
        and e.product_id in catalog
        and catalog[e.product_id].price_percentile is not None
    ]
    if not found:
        return None
    median = statistics.median(found)
    if median < 1 / 3:
        return BUDGET
    return MID if median <= 2 / 3 else PREMIUM


def activity_level(ordered: Sequence[Event], settings: ProfileSettings) -> str:
    """From the distinct UTC days with any event in the window: 0 inactive,
    1-2 occasional, 3-9 regular, 10+ frequent."""
    cutoff = settings.cutoff_micros
    start = cutoff - settings.activity_window_days * MICROS_PER_DAY
    days = {e.ts // MICROS_PER_DAY for e in ordered if start <= e.ts < cutoff}
    if not days:
        return INACTIVE
    if len(days) <= 2:
        return OCCASIONAL
    return REGULAR if len(days) <= 9 else FREQUENT


def price_percentiles(
    product_ids: Sequence[str],
    categories: Sequence[Optional[str]],
    currencies: Sequence[Optional[str]],
    prices: Sequence[Optional[float]],
) -> dict[str, Optional[float]]:
    """Mid-rank percentile of each product's price within its (category,
    currency): (cheaper + equal / 2) / count, equal counting itself. Prices
    10, 20, 30 give 1/6, 1/2, 5/6."""
    groups: dict[tuple, list[float]] = {}
    for cat, cur, price in zip(categories, currencies, prices):
        if price is not None:
            groups.setdefault((cat, cur), []).append(price)
    for values in groups.values():
        values.sort()
    out: dict[str, Optional[float]] = {}
    for pid, cat, cur, price in zip(product_ids, categories, currencies, prices):
        if price is None:
            out[pid] = None
            continue
        values = groups[(cat, cur)]
        lower = bisect.bisect_left(values, price)
        equal = bisect.bisect_right(values, price) - lower
        out[pid] = (lower + equal / 2) / len(values)
    return out


def catalog_facts(products: pa.Table) -> dict[str, ProductFacts]:
    """The catalog (as ``inputs.read_lookup_table`` returns it) as ProductFacts by id."""
    ids = products[C.PRODUCT_ID].to_pylist()
    cats, brands = products["category"].to_pylist(), products["brand"].to_pylist()
    pct = price_percentiles(ids, cats, products["currency"].to_pylist(), products["price"].to_pylist())
    return {
        pid: ProductFacts(title, cat, brand, pct[pid])
        for pid, title, cat, brand in zip(ids, products["title"].to_pylist(), cats, brands)
    }


def profiles_table(rows: list[dict]) -> pa.Table:
    """Profile rows as a table with exactly the allow-listed columns."""
    return pa.Table.from_pylist([{k: r.get(k) for k in PROFILE_FIELDS} for r in rows], schema=PROFILE_SCHEMA)
