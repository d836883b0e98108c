"""The gate's rules: one small method per rule, each returning findings.

A finding is a reason code (see ``policy``) and a short human-readable
detail. Details never repeat personal data found in the copy: they say what
kind it was, not what it said. Whether a finding rejects the copy or sends it
to review is the policy's business, not the rule's.

Everything the rules compare against ("the source") is what the prompt was
built from: the product record, and for brands and URLs also the user's
profile fields. Product descriptions are untrusted text; a URL copied out of
one is still flagged, and a claim counts as stated by the product only when a
trusted field (attributes, selling points, extracted facts) holds it.

Content rules read one normalized form of the copy (``text.normalize``:
format characters removed, NFKC, look-alike letters folded); the length
rules measure the published text, which is what a channel counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex

from factory.quality import contacts, pii
from factory.quality import policy as P
from factory.quality.policy import Offer, QualityPolicy, load_lexicon
from factory.quality.text import (
    display_width,
    graphemes,
    han_share,
    invisible_kinds,
    lookalike_words,
    normalize,
    sms_size,
    strip_invisible,
)


@dataclass(frozen=True)
class Finding:
    code: str
    detail: str


# --- Product facts, built once per product ------------------------------------------

# A number as copy writes it: 1,299 / 1299.00 / 12,50 / 1.2万 / 30k / 20%.
# Digits glued to Latin letters (IPX4, B2B) are model names, not claims. A
# comma counts as a thousands separator only after a digit: NFKC makes the
# Chinese full-width comma ASCII ("毛巾，1299元" -> "毛巾,1299元").
_NUMBER = regex.compile(
    r"(?<![A-Za-z0-9.])(?<!\d,)(\d{1,3}(?:,\d{3})+|\d+)(?:([.,])(\d+))?(?![0-9])\s*(万|千|k|K)?"
)
_MULTIPLIER = {"万": 10_000, "千": 1_000, "k": 1_000, "K": 1_000}
# A time of day is no claim about the product ("tea at 7:30", "下午3点").
_CLOCK = regex.compile(
    r"(?<![\d.,])(?:[01]?\d|2[0-3])[:：][0-5]\d(?:\s?[ap]\.?m\.?)?(?![\d])"
    r"|(?<![\d.,])(?:1[0-2]|0?\d)\s?[ap]\.?m\.?(?![a-z])"
    r"|(?<![\d.,])(?:[01]?\d|2[0-4])\s?点(?:半|[0-5]?\d分)?"
    r"|(?<=\bat\s)(?:1[0-2]|0?\d)(?=\s*(?:[,;:!?]|$|o'clock))",
    regex.IGNORECASE,
)


def number_values(text: str) -> list[tuple[str, frozenset[float]]]:
    """Each number in ``text`` with every value it can mean (``1.299`` may be
    1.299 or, European style, 1299)."""
    found = []
    for m in _NUMBER.finditer(text):
        whole, sep, frac, mult = m.group(1), m.group(2), m.group(3), m.group(4)
        base = float(whole.replace(",", ""))
        values = {base}
        if sep is not None:
            values = {float(f"{whole.replace(',', '')}.{frac}")}
            if len(frac) == 3:  # 1.299 or 1,299 as a thousands separator
                values.add(float(whole.replace(",", "") + frac))
        if mult:
            values |= {v * _MULTIPLIER[mult] for v in values}
        found.append((m.group(0).strip(), frozenset(round(v, 2) for v in values)))
    return found


def _flatten(value: Any) -> list[str]:
    if value is None:
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        # Only JSON text starting with { or [ (after JSON whitespace) parses to
        # a map or a list; skip the failing parse of every plain string.
        if value.lstrip(" \t\n\r")[:1] not in ("{", "["):
            return [value]
        try:
            parsed = json.loads(value)
        except ValueError:
            return [value]
        return _flatten(parsed) if isinstance(parsed, (dict, list)) else [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in [str(k), *_flatten(v)]]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _flatten(v)]
    return [str(value)]


@dataclass(frozen=True)
class ProductFacts:
    """What the copy may state about a product, in the forms rules compare."""

    title: str
    brand: str
    source: str  # lower-cased text of every product field
    numbers: frozenset[float]
    facts: tuple[str, ...]  # selling points and attribute values
    # Lower-cased attributes, selling points and extracted facts: what may
    # vouch for a claim. Never the description, which is free text anyone
    # (or an injected instruction) could have put "guaranteed" into.
    trusted: str = ""
    category: str = ""
    # The trusted fields' phrases (normalized, lower-cased, longest first):
    # copy that repeats one ("fragrance free") states a fact, not a claim.
    phrases: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ProductFacts:
        title, brand = str(record.get("title") or ""), str(record.get("brand") or "")
        attributes = _flatten(record.get("attributes"))
        points = _flatten(record.get("selling_points"))
        # Extracted facts (factory.facts): every value in them was checked
        # against the record, but they add normalized forms ("10000 mm").
        extracted = _flatten(record.get("facts"))
        parts = [
            title,
            brand,
            str(record.get("category") or ""),
            str(record.get("description") or ""),
            *attributes,
            *points,
            *extracted,
        ]
        numbers = {v for part in parts for _, values in number_values(part) for v in values}
        price = record.get("price")
        if price is not None and not (isinstance(price, float) and math.isnan(price)):
            numbers.add(round(float(price), 2))
        facts = tuple(points + attributes + extracted)
        trusted = normalize("\n".join(facts)).lower()
        phrases = sorted(
            {p.strip() for p in trusted.split("\n") if len(p.strip()) >= 4}, key=len, reverse=True
        )
        return cls(
            title=title,
            brand=brand,
            source="\n".join(parts).lower(),
            numbers=frozenset(numbers),
            facts=facts,
            trusted=trusted,
            category=str(record.get("category") or "").lower(),
            phrases=tuple(phrases),
        )


@dataclass
class Copy:
    """One generated copy and what it was generated from."""

    text: str
    channel: str
    locale: str | None
    product: ProductFacts
    user_id: str | None = None
    user_source: str = ""  # lower-cased profile fields the prompt could use
    finish_reason: str | None = None
    raw: str | None = None  # the model's text before clean_text removed invisible characters
    user_names: frozenset[str] = frozenset()  # name-like parts of the profile's e-mail addresses
    norm: str = field(init=False)  # what the content rules read (text.normalize)
    masked: str = field(init=False, default="")  # norm lower-cased, own brand, title and allowed terms out
    words: list[str] = field(init=False, default_factory=list)  # tokens(masked)
    _links: list | None = field(init=False, default=None)

    @property
    def links(self) -> list:
        """``contacts.find_links`` of the normalized text, e-mail addresses out (two rules read it)."""
        if self._links is None:
            text = pii.EMAIL.sub(" ", self.norm) if "@" in self.norm else self.norm
            self._links = contacts.find_links(text)
        return self._links

    def __post_init__(self) -> None:
        self.norm = normalize(self.text)


@dataclass
class Measures:
    length: int = 0
    length_limit: int = 0
    numeric_fidelity: float | None = None
    findings: list[Finding] = field(default_factory=list)


# --- Fixed patterns -------------------------------------------------------------------

_URL = regex.compile(
    r"(?i)\b(?:https?://|www\.)[^\s<>\"']+|\b(?:[a-z0-9-]+\.)+(?:com|net|org|io|co|shop|store|cn|uk|de|fr|info|"
    r"biz|xyz|top|app|site|online|link|example)\b(?:/[^\s<>\"']*)?"
)
_INJECTION = regex.compile(
    r"(?i)\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier|"
    r"preceding)\s+(?:instructions?|prompts?|rules|directions)|\bsystem\s+prompt\b|\byou\s+are\s+now\b|"
    r"\bnew\s+instructions?\b|\bdeveloper\s+mode\b|\bjailbreak|"
    r"(?:忽略|无视|忘记)(?:之前|以上|前面|上述|先前)?的?(?:所有)?(?:指令|指示|提示|要求|规则)|系统提示|新的?指令"
)
_REFUSAL = regex.compile(
    r"(?i)\b(?:as an ai|as a language model|as an assistant|i(?:'| a)m sorry|i(?:'| a)m unable|i cannot|"
    r"i can(?:'|no)t|i won'?t|i do not have|i don'?t have (?:enough|any) information)\b|"
    r"作为(?:一个)?(?:AI|人工智能|语言模型|助手)|我无法|我不能|抱歉"
)
_PLACEHOLDER = regex.compile(
    r"^requirements?\b|</?product>|\{[a-z_]+\}|\[(?:product(?: name)?|brand(?: name)?|name|title|price|"
    r"customer(?: name)?|user(?: name)?|first name|link|url)\]|\bplaceholder\b",
    regex.IGNORECASE,
)
_CHATTER = regex.compile(
    r"(?i)^\W*(?:sure|certainly|of course|okay|ok|absolutely|here(?:'s| is| are)|below is|this is a)\b|"
    r"^\W*(?:好的|当然|以下是|这是)"
)
_LIST_MARKER = regex.compile(r"(?im)(?:^|\s)(?:1[.)]\s|option\s*1\b|①)")
_WORD = regex.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_LATIN_WORD = regex.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_HAN_RUN = regex.compile(r"\p{Han}+")
_CHAR_LOOP = regex.compile(r"(.)\1{5,}")
_LETTER = regex.compile(r"\p{L}")

_MATERIALS_EN = (
    "cotton",
    "linen",
    "wool",
    "merino",
    "cashmere",
    "alpaca",
    "silk",
    "leather",
    "suede",
    "denim",
    "nylon",
    "polyester",
    "spandex",
    "elastane",
    "bamboo",
    "oak",
    "walnut",
    "teak",
    "wooden",
    "steel",
    "stainless steel",
    "aluminium",
    "aluminum",
    "titanium",
    "copper",
    "brass",
    "ceramic",
    "porcelain",
    "glass",
    "marble",
    "granite",
    "plastic",
    "rubber",
    "silicone",
    "carbon fiber",
    "carbon fibre",
    "fleece",
    "velvet",
    "canvas",
    "jute",
    "rattan",
    "seagrass",
    "cast iron",
    "clay",
    "gore-tex",
    "mesh",
)
_MATERIALS_ZH = (
    "纯棉",
    "棉",
    "亚麻",
    "羊毛",
    "羊绒",
    "真丝",
    "丝绸",
    "皮革",
    "真皮",
    "牛皮",
    "尼龙",
    "涤纶",
    "竹",
    "实木",
    "橡木",
    "胡桃木",
    "不锈钢",
    "铝合金",
    "钛",
    "铜",
    "陶瓷",
    "玻璃",
    "大理石",
    "硅胶",
    "碳纤维",
    "羽绒",
)


def _latin(term: str) -> bool:
    return not regex.search(r"\p{Han}", term)


# Latin terms are matched as whole tokens of lower-cased text: "best" is not in
# "bestseller", "#1", "100%" and "world's" are tokens, "no. 1" is two.
_TERM_TOKEN = regex.compile(r"[a-z0-9#%]+(?:['’-][a-z0-9%]+)*")


class TermMatcher:
    """Finds lexicon terms in text, fast enough for every row of a big run.

    One alternation regex with word-boundary lookarounds cost ~0.2-0.4 ms a
    row; here Latin terms are token n-gram lookups, Chinese terms one
    Aho-Corasick pass (pyahocorasick: hundreds of terms cost what one does),
    and ``re:`` terms one combined regex (those starting with a literal run
    alone, after a cheap first-character test)."""

    def __init__(self, terms: Iterable[str]):
        self._latin: dict[int, dict[tuple[str, ...], str]] = {}
        han: list[str] = []
        self._patterns: list[tuple[str, regex.Pattern]] = []
        free: list[str] = []
        for term in dict.fromkeys(t for t in terms if t):
            if term.startswith("re:"):
                body = term[3:]
                trigger = body[0] if body and not regex.match(r"[\\(\[.^$|?*+{]", body[0]) else ""
                if trigger:
                    self._patterns.append((trigger, regex.compile(body, regex.IGNORECASE)))
                else:
                    free.append(body)
            elif _latin(term):
                words = tuple(_TERM_TOKEN.findall(term.lower()))
                if words:
                    self._latin.setdefault(len(words), {})[words] = term
            else:
                han.append(term.lower())
        if free:
            self._patterns.append(("", regex.compile("|".join(f"(?:{b})" for b in free), regex.IGNORECASE)))
        self._han = _automaton(han) if han else None
        # A text holding none of the terms' first tokens holds no Latin term:
        # one set test instead of an n-gram walk per term length.
        self._first_words = frozenset(words[0] for table in self._latin.values() for words in table)
        self._any = bool(self._latin or han or self._patterns)

    def __bool__(self) -> bool:
        return self._any

    def find(self, lowered: str, words: list[str] | None = None) -> list[str]:
        """Terms found in ``lowered`` (lower-cased text), as they appear there.
        ``words``: ``tokens(lowered)``, when the caller has them already."""
        found = []
        if self._latin:
            words = tokens(lowered) if words is None else words
            if not self._first_words.isdisjoint(words):
                for n, table in self._latin.items():
                    for i in range(len(words) - n + 1):
                        key = tuple(words[i : i + n])
                        if key in table:
                            found.append(" ".join(key))
        if self._han is not None and not lowered.isascii():  # every Chinese term has a Han character
            found.extend(dict.fromkeys(term for _, term in self._han.iter(lowered)))
        for trigger, pattern in self._patterns:
            if not trigger or trigger in lowered:
                found.extend(m.group(0) for m in pattern.finditer(lowered))
        return found


def _automaton(terms: list[str]):
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for term in terms:
        automaton.add_word(term, term)
    automaton.make_automaton()
    return automaton


def tokens(lowered: str) -> list[str]:
    """The tokens ``TermMatcher`` matches Latin terms against."""
    return _TERM_TOKEN.findall(lowered)


def _lower_words(pattern: regex.Pattern, text: str) -> list[str]:
    """``[w.lower() for w in pattern.findall(text)]``; for ASCII text (lower()
    only maps A-Z there) one lower() of the whole text does the same."""
    if text.isascii():
        return pattern.findall(text.lower())
    return [w.lower() for w in pattern.findall(text)]


def _shingles(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = _lower_words(_WORD, text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class RuleBook:
    """All rules, compiled once (per gate actor) from the policy, the lexicon,
    the templates' fixed text and the catalog's brand names."""

    def __init__(
        self,
        policy: QualityPolicy,
        prompt_texts: Sequence[str] = (),
        example_products: Sequence[str] = (),
        brands: Iterable[str] = (),
        lexicon: Mapping[str, Any] | None = None,
        offers: Sequence[Offer] = (),
        competitors: Sequence[str] = (),
    ):
        self.policy = policy
        lex = lexicon or load_lexicon()
        allowed = {t.lower() for t in policy.allowed_terms}
        banned = [
            t for lang in ("zh", "en") for t in lex.get("banned", {}).get(lang, [])
        ] + policy.banned_terms
        risky = [t for lang in ("zh", "en") for t in lex.get("risky", {}).get(lang, [])] + policy.risky_terms
        self._banned = TermMatcher(t for t in banned if t.lower() not in allowed)
        self._risky = TermMatcher(t for t in risky if t.lower() not in allowed)
        self._factual = {t.lower() for t in lex.get("factual_in_product", [])}

        def matcher(section: Mapping[str, Any] | None) -> TermMatcher:
            terms = [t for lang in ("zh", "en") for t in (section or {}).get(lang, [])]
            return TermMatcher(t for t in terms if t.lower() not in allowed)

        self._offer_kinds = {kind: matcher(lex.get("offers", {}).get(kind)) for kind in P.OFFER_KINDS}
        health = lex.get("health", {})
        self._medical, self._effects = matcher(health.get("medical")), matcher(health.get("effects"))
        self._regulated_words = tuple(c.lower() for c in health.get("regulated_categories", []))
        self._regulated: dict[str, bool] = {}
        self._ranking = matcher(lex.get("ranking"))
        self._competitors = TermMatcher(c.strip() for c in competitors if c and c.strip())
        # The campaign's offers: their kinds may be made, their numbers
        # ("20% off", "over 50 USD") stated, and the lexicon words in their
        # own text ("free delivery") used.
        offers = tuple(offers)
        self._declared = frozenset(o.kind for o in offers)
        offer_text = normalize("\n".join(o.text for o in offers)).lower()
        self._offer_numbers = frozenset(v for _, values in number_values(offer_text) for v in values)
        self._offer_terms = (
            frozenset(
                t
                for m in (self._banned, self._risky, *self._offer_kinds.values())
                for t in m.find(offer_text)
            )
            if offers
            else frozenset()
        )
        self._allowed = sorted(allowed, key=len, reverse=True)
        self._materials = TermMatcher(_MATERIALS_EN + _MATERIALS_ZH)
        # Four-word runs of the prompts' own wording: copy that contains one
        # is the prompt echoed back ("No emoji, no links." was seen).
        self._prompt_shingles = set().union(*(_shingles(t) for t in prompt_texts)) if prompt_texts else set()
        # The worked examples' products: copy that names one (for another
        # product) has copied the example instead of writing its own.
        self._example_products = tuple(dict.fromkeys(p.lower() for p in example_products if len(p) >= 4))
        self._latin_brands: dict[int, set[tuple[str, ...]]] = {}
        self._han_brands: dict[int, set[str]] = {}
        for brand in {b.strip() for b in brands if b and len(b.strip()) >= 2}:
            if _latin(brand):
                words = tuple(_LATIN_WORD.findall(brand))
                if words and len(brand) >= 3:
                    self._latin_brands.setdefault(len(words), set()).add(words)
            else:
                self._han_brands.setdefault(len(brand), set()).add(brand)
        # First word -> the word counts of the brands that start with it.
        self._brand_starts: dict[str, tuple[int, ...]] = {}
        for n, names in sorted(self._latin_brands.items()):
            for words in names:
                if n not in self._brand_starts.get(words[0], ()):
                    self._brand_starts[words[0]] = self._brand_starts.get(words[0], ()) + (n,)
        self._last_mask: tuple[str, ProductFacts, str] | None = None

    # The order is the order reasons appear in the output.
    def check(self, copy: Copy) -> Measures:
        m = Measures()
        if not copy.text.strip():
            m.findings.append(Finding(P.EMPTY, "the model returned no text"))
            if copy.finish_reason == "length":
                m.findings.append(Finding(P.TRUNCATED, "stopped at the token limit"))
            return m
        self._length(copy, m)
        copy.masked = self._mask(copy.norm, copy.product)
        copy.words = tokens(copy.masked)
        for rule in (
            self._disguised,
            self._truncated,
            self._artifacts,
            self._repetition,
            self._language,
            self._claims,
            self._offers,
            self._health,
            self._rankings,
            self._personal_data,
            self._foreign,
            self._competitor,
            self._materials_rule,
        ):
            m.findings.extend(rule(copy))
        self._numbers(copy, m)
        return m

    # --- rules ----------------------------------------------------------------------

    def _length(self, copy: Copy, m: Measures) -> None:
        """Length in the channel's own unit against the campaign's limit."""
        limits = self.policy.limits_for(copy.channel)
        text = copy.text
        if limits.unit == "sms_segments":
            size = sms_size(text)
            m.length, m.length_limit = size.units, size.limit(limits.max)
            if size.units > m.length_limit:
                why = (
                    f" (UCS-2 because of {copy_char(size.first_non_gsm)})" if size.encoding == "UCS-2" else ""
                )
                m.findings.append(
                    Finding(
                        P.LENGTH_EXCEEDED,
                        f"{size.segments} SMS segments, {size.units} "
                        f"{size.encoding} units > {m.length_limit}{why}",
                    )
                )
        else:
            measure = display_width if limits.unit == "display_width" else graphemes
            m.length, m.length_limit = measure(text), limits.max
            if m.length > limits.max:
                m.findings.append(
                    Finding(P.LENGTH_EXCEEDED, f"{m.length} {limits.unit.replace('_', ' ')} > {limits.max}")
                )
        shown = m.length if limits.unit == "graphemes" else graphemes(text)
        if shown < limits.min:
            m.findings.append(Finding(P.TOO_SHORT, f"{shown} characters < {limits.min}"))
        if limits.single_line:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            if len(lines) > 1 or _LIST_MARKER.search(text):
                m.findings.append(
                    Finding(
                        P.MULTIPLE_OPTIONS, f"{max(len(lines), 2)} lines or options; the channel takes one"
                    )
                )

    def _disguised(self, copy: Copy) -> Iterable[Finding]:
        """Invisible characters (removed from the published text, but they
        were there to hide a word or reorder what a reader sees) and words
        spelled with look-alike letters of another alphabet."""
        raw = copy.raw if copy.raw is not None else copy.text
        if raw.isascii():
            return
        found = invisible_kinds(raw)
        mixed = lookalike_words(strip_invisible(raw))
        if mixed:
            found.append(f"{mixed} word(s) mixing Latin with look-alike letters")
        if found:
            yield Finding(P.DISGUISED_TEXT, ", ".join(found))

    def _truncated(self, copy: Copy) -> Iterable[Finding]:
        if copy.finish_reason == "length":
            yield Finding(P.TRUNCATED, "stopped at the token limit, mid-sentence")

    def _artifacts(self, copy: Copy) -> Iterable[Finding]:
        """The model talking instead of writing copy, or the prompt echoed."""
        text = copy.norm
        if _REFUSAL.search(text):
            yield Finding(P.REFUSAL, "reads as a refusal or a note from the model")
        leak = _PLACEHOLDER.search(text)
        if leak:
            yield Finding(P.TEMPLATE_LEAK, f"template text {leak.group(0)!r} in the copy")
        elif self._prompt_shingles and not self._prompt_shingles.isdisjoint(_shingles(text)):
            yield Finding(P.TEMPLATE_LEAK, "repeats the prompt's instructions")
        else:
            lowered = text.lower()
            echoed = next(
                (p for p in self._example_products if p in lowered and p not in copy.product.source), None
            )
            if echoed:
                yield Finding(P.TEMPLATE_LEAK, f"copies the worked example's product ({echoed})")
        if _CHATTER.search(text):
            yield Finding(P.CHATTER, "starts with a reply to the request, not the copy")

    def _repetition(self, copy: Copy) -> Iterable[Finding]:
        """Degenerate loops: a word pair three times, a Chinese phrase three
        times, a character six times in a row."""
        text = copy.norm
        words = _lower_words(_LATIN_WORD, text)
        loop = None
        # A pair seen three times makes at least two repeats among the pairs.
        if len(words) - 1 - len(set(zip(words, words[1:]))) >= 2:
            pairs: dict[tuple[str, str], int] = {}
            for pair in zip(words, words[1:]):
                pairs[pair] = pairs.get(pair, 0) + 1
            loop = next((" ".join(p) for p, n in pairs.items() if n >= 3), None)
        if loop is None and not text.isascii():
            for run in _HAN_RUN.findall(text):
                grams: dict[str, int] = {}
                for i in range(len(run) - 2):
                    g = run[i : i + 3]
                    grams[g] = grams.get(g, 0) + 1
                loop = next((g for g, n in grams.items() if n >= 3), None)
                if loop:
                    break
        if loop is None and _CHAR_LOOP.search(text):
            loop = _CHAR_LOOP.search(text).group(0)[:6]
        if loop:
            yield Finding(P.REPETITION, f"{loop!r} repeats")

    def _language(self, copy: Copy) -> Iterable[Finding]:
        """Script check: Chinese locales need Chinese text, others must not be
        Chinese. Brand and title are masked: an English brand in Chinese copy
        is fine. (Telling Latin-script languages apart is not attempted.)"""
        text = copy.masked
        if not _LETTER.search(text):
            return  # only the brand, numbers and signs: nothing to judge
        share = han_share(text)
        wants_zh = (copy.locale or "").lower().startswith("zh")
        if wants_zh and share < 0.3:
            yield Finding(P.WRONG_LANGUAGE, f"locale {copy.locale} wants Chinese; {share:.0%} of letters are")
        elif not wants_zh and share > 0.2:
            yield Finding(
                P.WRONG_LANGUAGE, f"locale {copy.locale or 'unknown'}: {share:.0%} of letters are Chinese"
            )

    def _claims(self, copy: Copy) -> Iterable[Finding]:
        """Banned and risky claims from the lexicon, with the product's own
        brand and title (and the campaign's allowed terms) masked first."""
        text, words = copy.masked, copy.words
        for matcher, code in ((self._banned, P.BANNED_CLAIM), (self._risky, P.RISKY_CLAIM)):
            hits = []
            for term in matcher.find(text, words):
                if term in self._factual and term in copy.product.trusted:
                    continue  # "100% cotton" when the product's attributes say 100% cotton
                if term in self._offer_terms:
                    continue  # the campaign's own offer says it ("free delivery")
                hits.append(term)
            if hits:
                yield Finding(code, ", ".join(repr(h) for h in dict.fromkeys(hits)))

    def _offers(self, copy: Copy) -> Iterable[Finding]:
        """Offers are promises: a kind the campaign did not declare, and that
        no trusted product field states ("2-year warranty" as a selling
        point), is an offer the model invented."""
        made = []
        for kind, matcher in self._offer_kinds.items():
            if kind in self._declared or not matcher:
                continue
            terms = [
                t
                for t in matcher.find(copy.masked, copy.words)
                if t not in copy.product.trusted and t not in self._offer_terms
            ]
            if terms:
                made.append(f"{kind.replace('_', ' ')} ({terms[0]!r})")
        if made:
            yield Finding(P.UNDECLARED_OFFER, "not an offer of this campaign: " + ", ".join(made))

    def _health(self, copy: Copy) -> Iterable[Finding]:
        """Medical claims for any product; effect claims (skin, weight, sleep,
        nutrition) for regulated categories. A trusted field may state them."""
        terms = self._medical.find(copy.masked, copy.words)
        if self._is_regulated(copy.product.category):
            terms += self._effects.find(copy.masked, copy.words)
        unsupported = [t for t in dict.fromkeys(terms) if t not in copy.product.trusted]
        if unsupported:
            yield Finding(P.HEALTH_CLAIM, "not in the product's facts: " + ", ".join(map(repr, unsupported)))

    def _rankings(self, copy: Copy) -> Iterable[Finding]:
        """Rankings, endorsements and sales claims need a trusted field that states them."""
        unsupported = [
            t
            for t in dict.fromkeys(self._ranking.find(copy.masked, copy.words))
            if t not in copy.product.trusted
        ]
        if unsupported:
            yield Finding(P.RANKING_CLAIM, "not in the product's facts: " + ", ".join(map(repr, unsupported)))

    def _competitor(self, copy: Copy) -> Iterable[Finding]:
        """The campaign's competitors, unless a trusted field names one (a fit or compatibility fact)."""
        if not self._competitors:
            return
        named = [
            t
            for t in dict.fromkeys(self._competitors.find(copy.masked, copy.words))
            if t not in copy.product.trusted
        ]
        if named:
            yield Finding(P.COMPETITOR, "names a competitor: " + ", ".join(named))

    def _personal_data(self, copy: Copy) -> Iterable[Finding]:
        text = copy.norm
        kinds = pii.find_personal_data(text, ignore=_URL)
        if "e-mail address" not in kinds and (
            contacts.spelled_email(text) or any(link.spelled_email for link in copy.links)
        ):
            kinds.append("e-mail address (spelled out)")
        if copy.user_names and not copy.user_names.isdisjoint(_lower_words(_LATIN_WORD, text)):
            kinds.append("a name from the user's e-mail address")
        if kinds:
            yield Finding(P.PERSONAL_DATA, ", ".join(kinds))
        uid = (copy.user_id or "").strip()
        if len(uid) >= 4 and uid.lower() in text.lower():
            yield Finding(P.USER_IDENTIFIER, "the copy contains the user's id")
        handle = contacts.find_handle(text)
        if handle:
            yield Finding(P.CONTACT_HANDLE, handle)

    def _foreign(self, copy: Copy) -> Iterable[Finding]:
        """Content the prompt did not supply: URLs, other brands, and traces
        of instructions smuggled in through product text."""
        for link in copy.links:
            if link.spelled_email:
                continue  # an e-mail address written out: the personal data rule's
            if link.host and (link.host in copy.product.source or link.host in copy.user_source):
                yield Finding(P.SOURCE_URL, "a URL copied from the product text")
            else:
                yield Finding(
                    P.FOREIGN_URL, f"a {link.kind} that is not in the product data ({link.host[:60]})"
                )
            break
        if _INJECTION.search(copy.norm):
            yield Finding(P.INJECTION_TRACE, "contains instructions addressed to the model")
        others = [
            b
            for b in self._brands_in(copy.norm)
            if b.lower() != copy.product.brand.lower()
            and b.lower() not in copy.product.source
            and b.lower() not in copy.user_source
        ]
        if others:
            # Compared as word sequences too: "Nook Linen" found in the copy
            # is the product's own "Nook & Linen".
            words = " " + " ".join(_LATIN_WORD.findall(copy.product.source + "\n" + copy.user_source)) + " "
            others = [b for b in others if f" {b.lower()} " not in words]
        if others:
            yield Finding(P.FOREIGN_BRAND, "other brand(s): " + ", ".join(sorted(set(others))))

    def _materials_rule(self, copy: Copy) -> Iterable[Finding]:
        unsupported = [m for m in self._materials.find(copy.norm.lower()) if m not in copy.product.source]
        if unsupported:
            yield Finding(
                P.UNSUPPORTED_MATERIAL, "not in the product data: " + ", ".join(dict.fromkeys(unsupported))
            )

    def _numbers(self, copy: Copy, m: Measures) -> None:
        """Every number in the copy must equal, in value, one in the product
        record: "¥1,299" matches a price of 1299.0, "$90" does not match 89.99."""
        text = copy.norm
        if ":" in text or "点" in text or "m" in text or "at " in text:
            text = _CLOCK.sub(" ", text)
        claims = number_values(text)
        if not claims:
            return
        offered = self._offer_numbers
        unsupported = [
            shown
            for shown, values in claims
            if not values & copy.product.numbers and not (offered and values & offered)
        ]
        m.numeric_fidelity = round(1 - len(unsupported) / len(claims), 4)
        if unsupported:
            m.findings.append(
                Finding(
                    P.UNSUPPORTED_NUMBER, "not in the product data: " + ", ".join(dict.fromkeys(unsupported))
                )
            )

    # --- helpers ----------------------------------------------------------------------

    def _is_regulated(self, category: str) -> bool:
        known = self._regulated.get(category)
        if known is None:
            known = self._regulated[category] = any(w in category for w in self._regulated_words)
        return known

    def _mask(self, text: str, product: ProductFacts) -> str:
        """Lower-cased ``text`` without the product's own title and brand, the
        campaign's allowed terms and the phrases of the product's trusted
        fields (plain replaces: this runs on every row)."""
        last = self._last_mask
        if last is not None and last[0] is text and last[1] is product:
            return last[2]  # two rules mask the same copy
        original = text
        text = text.lower()
        for name in (product.title.lower(), product.brand.lower(), *self._allowed):
            if len(name) >= 2 and name in text:
                text = text.replace(name, " ")
        for phrase in product.phrases:
            if phrase in text:
                text = text.replace(phrase, " ")
        self._last_mask = (original, product, text)
        return text

    def _brands_in(self, text: str) -> list[str]:
        found = []
        if self._latin_brands:
            # Case-sensitive: brand names are capitalised; "stride" the word is not "Stride" the brand.
            # (The caller sorts what is found: the order here does not matter.)
            words = _LATIN_WORD.findall(text)
            starts = self._brand_starts
            for i, word in enumerate(words):
                for n in starts.get(word, ()):
                    if tuple(words[i : i + n]) in self._latin_brands[n]:
                        found.append(" ".join(words[i : i + n]))
        for run in _HAN_RUN.findall(text) if self._han_brands and not text.isascii() else ():
            for n, names in self._han_brands.items():
                found.extend(run[i : i + n] for i in range(len(run) - n + 1) if run[i : i + n] in names)
        return found


def copy_char(ch: str | None) -> str:
    if ch is None:
        return "none"
    return f"{ch!r} U+{ord(ch):04X}"
