"""Links and contact details in any disguise, for the gate.

Copy is sent by the shop; a link or a way to reach someone that the shop did
not add is how a hijacked prompt (or a model that copied a spam pattern)
sends customers elsewhere. Everything here reads the gate's normalized text
(``text.normalize``: NFKC, so full-width ｅｘａｍｐｌｅ．ｃｏｍ is already ASCII,
look-alike letters folded, format characters gone), and finds:

- links: with a scheme or ``www.``, a bare domain (``harbor-deals.shop``)
  whose suffix is on the Public Suffix List (tldextract's bundled snapshot,
  no download), short-link hosts, and domains whose dot is spelled out,
  spaced or bracketed (``example dot com``, ``example . com``,
  ``example(.)com``, ``example点com``, ``example。com``, ``e x a m p l e .
  c o m``);
- e-mail addresses spelled with words (``jane dot doe at gmail dot com``,
  ``jane(at)gmail.com``, ``jane艾特qq点com``);
- messaging handles: WeChat, QQ, WhatsApp, LINE, Telegram and the like, with
  their Chinese slang (V信, 薇信, 加V, 扣扣, 飞机号), an id after a platform
  name, an invitation to add or message someone on one, a social @handle;
- names taken from an e-mail address in the user's profile.

Chinese text writes no space around Latin words, so every boundary here is
an ASCII one: "访问jifeng.com下单" holds a link (Han letters are \\w to regex).
Phone numbers are ``pii``'s business (one home: the same finder scrubs prompts).
A spelled-out separator counts only before a suffix that is not an English
word (com, net, cn, ly ...), so "polka dot top" is not a link; a real dot
counts before any public suffix, except a capitalised one that starts a
sentence ("fresh.Shop now").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import regex

# Suffixes that are no English word: a spelled or spaced dot before one is a link.
_PLAIN_SUFFIXES = (
    "com",
    "net",
    "org",
    "cn",
    "io",
    "ly",
    "gl",
    "gd",
    "cc",
    "info",
    "biz",
    "xyz",
    "hk",
    "tw",
    "uk",
    "ru",
    "jp",
    "kr",
    "sg",
    "au",
    "ca",
    "tk",
    "ml",
    "ga",
    "cf",
    "im",
    "gov",
    "edu",
)
# Suffixes that are also words ("polka dot top"): a link only with a path after them.
_WORD_SUFFIXES = (
    "co",
    "me",
    "to",
    "tv",
    "us",
    "de",
    "fr",
    "it",
    "in",
    "top",
    "shop",
    "store",
    "site",
    "online",
    "link",
    "club",
    "vip",
    "app",
    "live",
    "life",
    "fun",
    "one",
    "win",
    "pro",
    "id",
    "at",
    "page",
)
# Hosts whose only use is to hide where a link goes.
SHORT_HOSTS = frozenset(
    {
        "bit.ly",
        "bitly.com",
        "tinyurl.com",
        "goo.gl",
        "ow.ly",
        "t.co",
        "t.cn",
        "dwz.cn",
        "url.cn",
        "suo.im",
        "is.gd",
        "v.gd",
        "cutt.ly",
        "rebrand.ly",
        "shorturl.at",
        "tiny.cc",
        "buff.ly",
        "lnkd.in",
        "t.me",
        "wa.me",
        "s.id",
        "u.nu",
        "rb.gy",
        "bl.ink",
        "short.io",
        "tr.ee",
        "linktr.ee",
        "qr.net",
        "sohu.gg",
        "c.tb.cn",
        "m.tb.cn",
        "e.tb.cn",
        "3.cn",
        "u.jd.com",
    }
)

# Reserved for examples and tests (RFC 2606): never a real suffix, always a link.
_RESERVED = frozenset({"example", "test", "invalid", "localhost"})
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# A real dot (or the ideographic full stop, which only a link puts between Latin labels).
_HOST = regex.compile(
    r"(?<![a-z0-9@.-])(?P<scheme>(?:https?|hxxps?)\s*:\s*//\s*)?(?P<www>www\s*\.\s*)?"
    r"(?P<host>(?:" + _LABEL + r"[.。])+(?:" + _LABEL + r"|xn--[a-z0-9-]+))(?![a-z0-9-])(?P<path>/[^\s]*)?",
    regex.IGNORECASE,
)
_DOT_WORD = r"(?:dot|d0t|dót|点|點|句点|\.|。)"
# A disguised separator: bracketed, spelled out, spaced on both sides, or 点 / 。.
_DISGUISED_SEP = (
    r"(?:\s*[(\[{<（【]\s*" + _DOT_WORD + r"\s*[)\]}>）】]\s*"
    r"|\s+(?:dot|d0t|dót)\s+|\s*(?:点|點|句点)\s*|\s+[.。]\s*|[.。]\s+)"
)
_DISGUISED = regex.compile(
    r"(?<![a-z0-9@])(?P<label>"
    + _LABEL
    + r")"
    + _DISGUISED_SEP
    + r"(?:(?P<plain>"
    + "|".join(_PLAIN_SUFFIXES)
    + r")(?![a-z0-9-])"
    + r"|(?P<word>"
    + "|".join(_WORD_SUFFIXES)
    + r")(?=\s*(?:/|斜杠|slash)))",
    regex.IGNORECASE,
)
_SCHEME = regex.compile(
    r"(?i)\b(?:h\s?t\s?t\s?p\s?s?|hxxps?)\s*(?::|colon|冒号)\s*(?:/|slash|斜杠)\s*(?:/|slash|斜杠)"
)
_SPACED_LETTERS = regex.compile(r"(?<![\w])(?:[a-z0-9@.](?:\s|$)){4,}", regex.IGNORECASE)
# Cheap first tests, in Python on the copy's tokens: most copy has no link,
# and a regex with no literal to anchor on costs 5-40 us a row.
_ALNUM = regex.compile(r"[a-z0-9]+")
_PLAIN_SET = frozenset(_PLAIN_SUFFIXES)


def _maybe_host(view: str, lowered: str) -> bool:
    """A dot between a letter or digit and a letter, or www / a scheme."""
    for dot in (".", "。") if not view.isascii() else (".",):
        i = view.find(dot)
        while i != -1:
            if 0 < i < len(view) - 1 and view[i - 1].isalnum() and view[i + 1].isalpha():
                return True
            i = view.find(dot, i + 1)
    return "www" in lowered or "http" in lowered or "hxxp" in lowered


def _spaced_run(words: list[str]) -> bool:
    """Four one-character tokens in a row: maybe "e x a m p l e"."""
    run = 0
    for w in words:
        run = run + 1 if len(w) == 1 else 0
        if run >= 4:
            return True
    return False


_AT_FORMS = r"(?:@|\(\s*at\s*\)|\[\s*at\s*\]|\{\s*at\s*\}|<\s*at\s*>|（\s*at\s*）|\bat\b|艾特|圈a|小老鼠)"
_AT_BEFORE = regex.compile(r"[\w.+-]+\s*" + _AT_FORMS + r"\s*$", regex.IGNORECASE)
# "Shop at harbor.com" is a link; "jane at gmail.com" an address: the word
# "at" makes an e-mail address only before a mail provider.
_AT_SIGN_BEFORE = regex.compile(r"[\w.+-]+\s*(?!\bat\b)" + _AT_FORMS + r"\s*$", regex.IGNORECASE)
_MAIL_DOMAINS = frozenset(
    "gmail googlemail hotmail outlook yahoo icloud qq 163 126 foxmail sina sohu aliyun yeah "
    "protonmail proton live msn aol".split()
)
_PROVIDERS = (
    "gmail",
    "googlemail",
    "hotmail",
    "outlook",
    "yahoo",
    "icloud",
    "qq",
    "163",
    "126",
    "foxmail",
    "sina",
    "sohu",
    "aliyun",
    "yeah",
    "protonmail",
    "proton",
    "live",
    "msn",
    "aol",
)
# Anchored on the at-form, with the name before it as a lookbehind: starting
# from every word of the copy cost ~40 us a row.
_MAIL_PROVIDER = regex.compile(
    r"(?<=[\w.+-]\s{0,3})" + _AT_FORMS + r"\s*(?:" + "|".join(_PROVIDERS) + r")(?![a-z0-9])", regex.IGNORECASE
)


@dataclass(frozen=True)
class Link:
    host: str
    kind: str  # "link", "short link", "spelled-out link"
    spelled_email: bool = False  # the host follows "name at": an e-mail address written out


@functools.lru_cache(maxsize=1)
def _extract():
    import tldextract

    # The Public Suffix List snapshot inside the package: no download, ever.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@functools.lru_cache(maxsize=4096)
def public_suffix(host: str) -> tuple[str, str]:
    """(registrable domain, suffix) of ``host``; an empty suffix when it has none."""
    parts = _extract()(host)
    return parts.domain, parts.suffix


def _spaced_letters(m: regex.Match) -> str:
    return regex.sub(r"\s+", "", m.group(0)) + " "


def find_links(norm: str) -> list[Link]:
    """Every link in ``norm`` (the gate's normalized text), in any disguise."""
    lowered = norm.lower()
    words = _ALNUM.findall(lowered)
    view = _SPACED_LETTERS.sub(_spaced_letters, norm) if _spaced_run(words) else norm
    if view is not norm:
        lowered = view.lower()
        words = _ALNUM.findall(lowered)
    links: list[Link] = []
    for m in _HOST.finditer(view) if _maybe_host(view, lowered) else ():
        host = m.group("host").lower().replace("。", ".")
        domain, suffix = public_suffix(host)
        explicit = m.group("scheme") or m.group("www") or host.rsplit(".", 1)[1] in _RESERVED
        if not explicit:
            if not (domain and suffix):
                continue
            last = m.group("host").replace("。", ".").rsplit(".", 1)[1]
            # "fresh.Shop now": a sentence with its space missing, not a domain.
            if last[:1].isupper() and suffix not in _PLAIN_SUFFIXES and not m.group("path"):
                continue
        kind = "short link" if host in SHORT_HOSTS or f"{domain}.{suffix}" in SHORT_HOSTS else "link"
        links.append(Link(host, kind, _after_at(view, m.start(), domain)))
    disguised = not _PLAIN_SET.isdisjoint(words) or "/" in view or "slash" in lowered or "斜杠" in view
    for m in _DISGUISED.finditer(view) if disguised else ():
        host = f"{m.group('label')}.{m.group('plain') or m.group('word')}".lower()
        links.append(Link(host, "spelled-out link", _after_at(view, m.start(), m.group("label").lower())))
    if not links and ("/" in view or "slash" in lowered or "斜杠" in view) and _SCHEME.search(view):
        links.append(Link("", "spelled-out link"))
    return links


def _after_at(view: str, start: int, domain: str) -> bool:
    before = view[max(0, start - 40) : start]
    pattern = _AT_BEFORE if domain in _MAIL_DOMAINS else _AT_SIGN_BEFORE
    return bool(pattern.search(before))


def spelled_email(norm: str) -> bool:
    """An e-mail address at a known provider with no domain suffix written
    ("jane at gmail", "jane艾特qq"); the rest are found with the links."""
    lowered = norm.lower()
    if not any(p in lowered for p in _PROVIDERS):
        return False
    return bool(_MAIL_PROVIDER.search(norm))


# --- Messaging handles ---------------------------------------------------------------------
_PLATFORM = (
    r"(?:we\s?chat|weixin|wechat\s?id|whats\s?app|telegram|tele\s?gram|signal|viber|kakao\s?talk|"
    r"kakao|snapchat|snap|instagram|insta|ig|tiktok|douyin|facebook|messenger|line|qq|vx|wx|tg|"
    r"微信|威信|薇信|徽信|维信|v信|微x|卫星|扣扣|企鹅号?|抖音号?|小红书号?|飞机号?|纸飞机|电报|钉钉)"
)
_HANDLE = regex.compile(
    # A platform, then an id: "WeChat: harbor_deals88", "微信号 hd8888", "QQ 123456789", "LINE ID @shop".
    r"(?<![a-z0-9])" + _PLATFORM + r"\s*(?:号|账号|id|handle|用户名)?\s*[:：=]?\s*@?(?=[\w.-]*\d|[\w.-]*_|@)"
    r"[a-z0-9][\w.-]{4,}"
    # An invitation to reach someone on one.
    r"|\b(?:add|message|msg|text|ping|dm|contact|reach|find|follow|chat\s+with|hit)\s+(?:us|me|them|her|him)\s+"
    r"(?:up\s+)?(?:on|via|at|through|over)\s+(?:we\s?chat|whats\s?app|telegram|line|qq|signal|viber|kakao\w*|"
    r"snapchat|instagram|ig|tiktok)\b"
    r"|\b(?:dm|pm|inbox)\s+(?:us|me)\b|\bslide\s+into\s+(?:our|my)\s+dms?\b"
    r"|(?:加|➕|\+)\s*(?:我|我们|好友)?\s*(?:的)?\s*(?:微信|威信|薇信|徽信|维信|v信|vx|wx|v|扣扣|qq|企鹅|飞机|tg)(?![a-z])"
    r"|私信|私聊|私我|扫码加|扫码添加|扫一扫加"
    # Slang that only ever means a messaging account.
    r"|v信|薇信|威信|徽信|维信|微x|卫星号|扣扣号|企鹅号|飞机号|纸飞机|电报群",
    regex.IGNORECASE,
)
_SOCIAL = regex.compile(r"(?<![\w@.])@[A-Za-z][\w.]{2,29}(?![\w@])(?!\.[a-z])")


# Latin tokens one of the handle patterns needs; copy without any (and without
# Chinese or a "+") skips the regex, which costs ~20 us a row.
_HANDLE_WORDS = frozenset(
    "chat wechat weixin whatsapp whats telegram tele signal viber kakao kakaotalk snapchat snap instagram "
    "insta ig tiktok douyin facebook messenger line qq vx wx tg dm pm inbox dms slide".split()
)


def find_handle(norm: str) -> str | None:
    """A messaging handle or an invitation to reach someone off the shop, or None."""
    lowered = norm.lower()
    if norm.isascii() and "+" not in norm and _HANDLE_WORDS.isdisjoint(_ALNUM.findall(lowered)):
        return "social media handle" if "@" in norm and _SOCIAL.search(norm) else None
    m = _HANDLE.search(norm)
    if m:
        return "messaging handle or invitation"
    if "@" in norm and _SOCIAL.search(norm):
        return "social media handle"
    return None


# --- Names from the profile's e-mail addresses ------------------------------------------------
_PROFILE_EMAIL = regex.compile(r"([\w.+-]+)@[\w-]+(?:\.[\w-]+)+")
_NAME_PART = regex.compile(r"[a-z]{3,}")
# Words an address is often made of that are no one's name.
_NOT_NAMES = frozenset(
    "mail email info shop store sales service support team hello contact admin user test official love fan "
    "fans the and real its not work home life style news club vip cool happy lucky best baby girl boy king "
    "queen star online web net box office".split()
)


def profile_names(profile_text: str) -> frozenset[str]:
    """Name-like parts of the e-mail addresses in a profile's text
    (``jane.doe88@example.com`` -> jane, doe), minus words the rest of the
    profile uses anyway ("hiking.fan@..." with hiking among the interests)."""
    if "@" not in profile_text:
        return frozenset()
    locals_ = [m.group(1).lower() for m in _PROFILE_EMAIL.finditer(profile_text)]
    rest = _PROFILE_EMAIL.sub(" ", profile_text.lower())
    return frozenset(
        p for local in locals_ for p in _NAME_PART.findall(local) if p not in _NOT_NAMES and p not in rest
    )
