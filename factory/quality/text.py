"""Measuring copy the way each channel measures it.

Channels do not count bytes or code points: a push body is limited in what a
person sees (graphemes: one emoji with a skin tone is one), Google Ads counts
CJK and other double-width characters twice, and an SMS is billed in
segments whose size depends on the encoding the whole message needs.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import regex

_GRAPHEME = regex.compile(r"\X")

# GSM 03.38: the default alphabet (one septet each) and the extension table
# (an escape plus a septet: two each). Anything else forces UCS-2.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

# Typography a model likes that GSM-7 lacks; one of these silently turns a
# 150-character SMS into three UCS-2 segments. Plain equivalents exist.
_GSM_SUBSTITUTES = str.maketrans(
    {
        "‘": "'",
        "’": "'",
        "‚": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "–": "-",
        "—": "-",
        "…": "...",
        "\u00a0": " ",
        "\u2009": " ",
        "\u202f": " ",
        "•": "-",
    }
)

SMS_SINGLE = {"GSM-7": 160, "UCS-2": 70}
SMS_MULTI = {"GSM-7": 153, "UCS-2": 67}  # each part of a concatenated SMS loses room to its header


def graphemes(text: str) -> int:
    """User-perceived characters (Unicode extended grapheme clusters)."""
    if text.isascii():
        # ASCII clusters are single characters, except CR LF (one cluster);
        # most copy is ASCII and the cluster regex costs ~15 us a row.
        return len(text) - text.count("\r\n")
    return len(_GRAPHEME.findall(text))


def display_width(text: str) -> int:
    """Width as ad platforms count it: wide and full-width characters count 2."""
    if text.isascii():
        return graphemes(text)  # no ASCII character is wide
    width = 0
    for cluster in _GRAPHEME.findall(text):
        width += 2 if unicodedata.east_asian_width(cluster[0]) in ("W", "F") else 1
    return width


@dataclass(frozen=True)
class SmsSize:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int
    first_non_gsm: str | None  # the character that forced UCS-2, if any

    def limit(self, max_segments: int) -> int:
        """Units allowed in ``max_segments`` segments of this encoding."""
        per = SMS_SINGLE if max_segments <= 1 else SMS_MULTI
        return per[self.encoding] * max(1, max_segments)


_GSM7_ALL = GSM7_BASIC | GSM7_EXTENDED


def sms_size(text: str) -> SmsSize:
    septets, offender = 0, None
    if _GSM7_ALL.issuperset(text):  # the usual case, counted without a loop in Python
        septets = len(text) + sum(text.count(ch) for ch in GSM7_EXTENDED)
    else:
        for ch in text:
            if ch in GSM7_BASIC:
                septets += 1
            elif ch in GSM7_EXTENDED:
                septets += 2
            else:
                offender = ch
                break
    if offender is None:
        encoding, units = "GSM-7", septets
    else:
        encoding, units = "UCS-2", len(text.encode("utf-16-le")) // 2
    single, multi = SMS_SINGLE[encoding], SMS_MULTI[encoding]
    segments = 0 if units == 0 else (1 if units <= single else -(-units // multi))
    return SmsSize(encoding, units, segments, offender)


def gsm_friendly(text: str) -> str:
    """Replace typographic punctuation that has a GSM-7 equivalent.

    Only worth it when that makes the whole text GSM-7; a Chinese SMS is UCS-2
    anyway and keeps its punctuation."""
    plain = text.translate(_GSM_SUBSTITUTES)
    return plain if sms_size(plain).encoding == "GSM-7" else text


_HAN = regex.compile(r"\p{Han}")
_LETTER = regex.compile(r"\p{L}")


def han_share(text: str) -> float:
    """Share of letters that are Chinese characters (0 when there are no letters)."""
    han = len(_HAN.findall(text))
    if not han:
        return 0.0  # no Han: no need to count the letters
    letters = len(_LETTER.findall(text))  # (a Han numeral like 〇 is not a letter)
    return han / letters if letters else 0.0


# --- One normalized text for the rules ------------------------------------------------
# Format characters (Unicode category Cf) draw nothing: zero-width spaces and
# joiners, bidirectional embeddings, overrides and isolates, the soft hyphen,
# the byte-order mark, tag characters. In copy they hide a word from a filter
# ("gua\u200branteed") or reorder what a reader sees (U+202E). Two uses are
# kept: the joiner inside an emoji sequence (👨‍👩‍👧) and the tags of a
# subdivision flag (🏴 + tags + cancel tag).
_INVISIBLE = regex.compile(
    r"(?:(?<=\p{Extended_Pictographic}[\N{VARIATION SELECTOR-16}\p{Emoji_Modifier}]?)\N{ZERO WIDTH JOINER}"
    r"(?=\p{Extended_Pictographic})|\U0001F3F4[\U000E0020-\U000E007E]+\U000E007F)(*SKIP)(*FAIL)|\p{Cf}"
)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def strip_invisible(text: str) -> str:
    """``text`` without format characters, emoji sequences kept whole. The
    published copy is this: nothing a reader cannot see reaches them."""
    if text.isascii():
        return text
    return _INVISIBLE.sub("", text)


def invisible_kinds(text: str) -> list[str]:
    """What format characters ``text`` holds, by kind (for a finding's detail)."""
    if text.isascii():
        return []
    found = _INVISIBLE.findall(text)
    kinds = []
    if any(ch in _BIDI for ch in found):
        kinds.append("bidirectional control")
    if any("\U000e0000" <= ch <= "\U000e007f" for ch in found):
        kinds.append("tag characters")
    if any(ch not in _BIDI and not "\U000e0000" <= ch <= "\U000e007f" for ch in found):
        kinds.append("zero-width or format character")
    return kinds


def _lookalike_table() -> dict[int, str]:
    """Letters of other alphabets that look like a Latin letter or digit
    (Unicode's confusables, via confusable-homoglyphs), mapped to it: "bеst"
    with a Cyrillic е reads "best" to a person, so to the rules too. Only
    alphabets none of the shop's locales writes in; Han, kana and full-width
    forms are left to NFKC."""
    import json
    import os

    import confusable_homoglyphs

    with open(
        os.path.join(os.path.dirname(confusable_homoglyphs.__file__), "confusables.json"), encoding="utf-8"
    ) as f:
        data = json.load(f)
    table = {}
    for ch, entries in data.items():
        if len(ch) != 1 or ch.isascii():
            continue
        name = unicodedata.name(ch, "")
        if not name.startswith(_LOOKALIKE_SCRIPTS):
            continue
        target = next(
            (e["c"] for e in entries if len(e["c"]) == 1 and e["c"].isascii() and e["c"].isalnum()), None
        )
        if target:
            table[ord(ch)] = target.lower() if ch.islower() else target
    return table


_LOOKALIKE_SCRIPTS = ("CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC", "LISU", "CANADIAN SYLLABICS")
LOOKALIKES = _lookalike_table()
_LOOKALIKE_CHARS = frozenset(map(chr, LOOKALIKES))
_ASCII_LETTER = regex.compile(r"[A-Za-z]")
_TOKEN_WITH_DOTS = regex.compile(r"[\w.@-]+")


def lookalike_words(text: str) -> int:
    """Words that mix Latin letters with look-alikes from another alphabet
    ("bеst", "shop.сom"): no language writes those."""
    if text.isascii() or _LOOKALIKE_CHARS.isdisjoint(text):
        return 0
    return sum(
        1
        for w in _TOKEN_WITH_DOTS.findall(text)
        if _ASCII_LETTER.search(w) and not _LOOKALIKE_CHARS.isdisjoint(w)
    )


def normalize(text: str) -> str:
    """What every content rule reads: format characters removed, NFKC
    (full-width ｅｘａｍｐｌｅ．ｃｏｍ and １２９９ become ASCII, ﬁ becomes fi,
    𝐛𝐞𝐬𝐭 becomes best), and look-alike letters folded to Latin. Lengths are
    measured on the published text instead: channels count what is sent."""
    if text.isascii():
        return text  # NFKC leaves ASCII as it is; nothing to remove or fold
    text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))
    if not _LOOKALIKE_CHARS.isdisjoint(text):
        text = text.translate(LOOKALIKES)
    return text
