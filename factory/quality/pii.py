"""Personal data in free text: found (for the gate) and scrubbed (for prompts).

Patterns, not a model: e-mail addresses, phone numbers (international, North
American and Chinese mobile; looser digit groupings confirmed by Google's
libphonenumber rules for CN, US and GB; digits written as Chinese numerals or
English words), national ID and social security numbers, long digit runs
(card and account numbers) and street addresses. Prices and measures
("1,299.00", "10,000 mm") are not phone numbers.
"""

from __future__ import annotations

import regex

EMAIL = regex.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = regex.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,4}(?![\w])"
)
_CN_MOBILE = regex.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
_ID_NUMBERS = (
    ("national ID number", regex.compile(r"(?<!\d)\d{17}[\dXx](?![\dA-Za-z])")),
    ("social security number", regex.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")),
    ("long identifier number", regex.compile(r"(?<!\d|\d[.,])\d{9,}(?!\d|[.,]\d)")),
)
_STREET = (
    regex.compile(
        r"\b\d{1,5}\s+(?:[A-Z][\w'-]*\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|"
        r"Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Close|Square)\b\.?"
    ),
    regex.compile(r"\p{Han}{2,}(?:路|街|大道|巷|弄)\s*\d+\s*号"),
)
_DIGIT = regex.compile(r"\d")
# Seven or more digits with separators a number is written with ("1 3 8-1234 5678",
# "(0755) 2345.6789"): confirmed by phonenumbers before it counts.
_LOOSE_DIGITS = regex.compile(r"\+?\(?\d(?:[\s.\-–—·/()]{0,3}\d){6,15}")
_PHONE_REGIONS = ("CN", "US", "GB")
# Digits spelled out: no copy needs seven in a row, a phone number written so a filter misses it does.
_HAN_DIGITS = regex.compile(r"[〇零一二三四五六七八九幺两](?:[\s\-—–·]?[〇零一二三四五六七八九幺两]){6,}")
_WORD_DIGITS = regex.compile(
    r"(?i)(?:\b(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)\b[\s,.-]*){7,}"
)
_MEASURE = regex.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+")


def _phones(text: str) -> list[regex.Match]:
    found = list(_CN_MOBILE.finditer(text))
    found += [
        m
        for m in _PHONE.finditer(text)
        if sum(ch.isdigit() for ch in m.group(0)) >= 8 and not _MEASURE.fullmatch(m.group(0).strip())
    ]
    if not found:
        found = [
            m
            for m in _LOOSE_DIGITS.finditer(text)
            if _MEASURE.fullmatch(m.group(0).strip()) is None and _dialable(m.group(0))
        ]
    return found


def _dialable(candidate: str) -> bool:
    """A valid phone number in one of ``_PHONE_REGIONS`` (libphonenumber's
    per-region length and prefix rules), however its digits are grouped."""
    import phonenumbers

    digits = "".join(ch for ch in candidate if ch.isdigit() or ch == "+")
    for region in _PHONE_REGIONS:
        try:
            number = phonenumbers.parse(digits, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


def _spelled_phone(text: str) -> bool:
    if not text.isascii() and _HAN_DIGITS.search(text):
        return True
    return "o" in text and bool(_WORD_DIGITS.search(text))


def find_personal_data(text: str, ignore: regex.Pattern | None = None) -> list[str]:
    """The kinds of personal data in ``text`` (not the data itself).

    ``ignore`` masks spans first (the gate passes its URL pattern, so digits
    in a link are judged as a link)."""
    kinds = []
    if "@" in text and EMAIL.search(text):
        kinds.append("e-mail address")
        text = EMAIL.sub(" ", text)
    if not _DIGIT.search(text):
        if _spelled_phone(text):
            kinds.append("phone number (spelled out)")
        return kinds  # every pattern below needs a digit
    if any(p.search(text) for p in _STREET):
        kinds.append("street address")
    if ignore is not None:
        text = ignore.sub(" ", text)
    if _phones(text):
        kinds.append("phone number")
    for kind, pattern in _ID_NUMBERS:
        if pattern.search(text):
            kinds.append(kind)
            break
    return kinds


def scrub(text: str, replacement: str = "") -> str:
    """``text`` without the personal data ``find_personal_data`` looks for."""
    if "@" not in text and not _DIGIT.search(text):
        return " ".join(text.split())  # every pattern needs an "@" or a digit
    text = EMAIL.sub(replacement, text)
    for pattern in _STREET:
        text = pattern.sub(replacement, text)
    for _, pattern in _ID_NUMBERS:
        text = pattern.sub(replacement, text)
    spans: list[list[int]] = []
    for start, end in sorted(m.span() for m in _phones(text)):
        if spans and start <= spans[-1][1]:  # overlapping matches: one span
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    for start, end in reversed(spans):
        text = text[:start] + replacement + text[end:]
    return " ".join(text.split())
