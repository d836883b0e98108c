"""Corpus quality figures for one run's generated copy.

One pure function, :func:`corpus_figures`, turns a run's copy table (plus the
product table) into a small JSON-serialisable dict that can be logged, stored
next to the run and compared across runs. Each figure answers one question:

``distinct_1`` / ``distinct_2``
    Distinct-n (Li et al. 2016): unique n-grams / total n-grams over every copy
    measured (n-grams never span two copies). Low values mean the model says
    the same words and phrases all over the run (template collapse), however
    good any single copy looks. Tokens come from :func:`tokens`: lowercased
    word runs for Latin script and one token per Han character, so English and
    Chinese copy are measured alike.

``personalization`` / ``personalization_groups`` / ``identical_copy_share``
    The factory exists to write copy per *user*. For every (product, channel)
    with copies for at least two users, the mean pairwise dissimilarity
    ``1 - Jaccard(unigram sets)`` between copies of *different* users, over at
    most 10 copies per group (each user's first copy first, users in id order)
    so the cost stays O(n). The run figure is the mean over groups weighted by
    the group's number of copies: 0 = every user got the same words, 1 = no
    word in common. ``identical_copy_share`` is the blunt version: the share of
    copies in those groups whose text (stripped, case-folded) is exactly
    another user's copy in the same group.

``attribute_coverage`` / ``attribute_coverage_mean``
    Is the copy about *this* product? A product's facts are its selling points
    and its attribute values (JSON strings and numbers). A fact is mentioned
    when at least half of its units occur in the copy, case-insensitively:
    its Latin content words (short English stopwords dropped) as copy tokens,
    and, for Han text, its character bigrams (the character itself for a lone
    Han character) as adjacent copy tokens. ``attribute_coverage`` is the share
    of non-empty copies naming at least one fact, ``attribute_coverage_mean``
    the mean fraction of the product's facts named. Copies of products without
    facts are not counted.

``numeric_fidelity``
    From the per-row ``numeric_fidelity`` column (null, or NaN, when the copy
    states no number): how many copies state numbers, their mean fidelity, and
    the share whose numbers are all backed by product data (value >= 1.0).
    Invented prices and percentages are the costliest hallucination.

``length_compliance``
    Share of non-empty copies within their channel's length limit (rows with a
    null length or limit are not counted).

``status_share``
    Share of rows per gate verdict (accepted / review / rejected).

``by_channel``
    The per-copy figures above, per channel, with the channel's row count:
    channels differ in length and style, and a run-level figure can hide one
    bad channel.

A copy is *empty* when its text is null or whitespace; empty copies count in
``rows`` and ``status_share`` and are left out of every text figure. A null
channel or status is reported as ``"unknown"``. A figure with nothing to
measure is ``None``; floats are rounded to 4 decimals. Above ``max_rows`` rows
a seeded uniform sample of ``max_rows`` rows is measured (``sampled: true``),
which bounds time and memory on any run size.

The work is columnar: Arrow tokenises and hashes, numpy groups, sorts and
compares (the pairwise comparison included), so 200k rows take seconds. Python
loops run only over the products' facts and the non-ASCII texts to case-fold.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex

__all__ = ["corpus_figures", "tokens", "STOPWORDS"]

# The one tokenizer, twice: ``regex`` for single strings, RE2 (inside Arrow) for
# columns. Word characters are letters, marks, digits and connectors (``\w``);
# each Han character is a token of its own. tests/cpu/test_quality_metrics.py
# checks the two agree.
_TOKEN = regex.compile(r"(?V1)\p{Han}|[[\p{L}\p{M}\p{N}\p{Pc}]--\p{Han}]+")
_HAN = regex.compile(r"\p{Han}")
_RE2_NON_WORD = r"[^\pL\pM\pN\p{Pc}]+"
_RE2_HAN = r"(\p{Han})"

# Short English function words that carry no product fact ("free of the dyes").
STOPWORDS = frozenset(
    "a an and are as at be but by for if in is it its nor of on or our so the to up us via was we".split()
)

GROUP_CAP = 10  # copies per (product, channel) group compared pairwise: at most 45 pairs
UNKNOWN = "unknown"  # key for a null channel or status


def tokens(text: str | None) -> list[str]:
    r"""Lowercased word tokens: ``\w`` runs without Han for Latin script, one token per Han character.

    The same split as the columnar one inside :func:`corpus_figures` (up to the
    rare characters whose lowercase differs between Python and Arrow).
    """
    if not text:
        return []
    return _TOKEN.findall(text.lower())


def _column_tokens(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """:func:`tokens` over a string column: (all tokens flat, in order; row index of each)."""
    spaced = pc.replace_substring_regex(pc.utf8_lower(texts), _RE2_NON_WORD, " ")
    has_han = pc.fill_null(pc.match_substring_regex(spaced, r"\p{Han}"), False)
    if pc.any(has_han).as_py():  # the capture-group rewrite is slow: only on rows that need it
        han_rows = pc.replace_substring_regex(spaced.filter(has_han), _RE2_HAN, r" \1 ")
        spaced = pc.replace_with_mask(spaced, has_han, han_rows)
    parts = pc.ascii_split_whitespace(spaced)  # only ASCII spaces are left
    flat, rows = pc.list_flatten(parts), pc.list_parent_indices(parts)
    keep = pc.greater(pc.binary_length(flat), 0)  # split leaves "" at the edges
    return flat.filter(keep), rows.filter(keep).to_numpy(zero_copy_only=False)


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _share(num: float, den: float) -> float | None:
    return _r(num / den) if den else None


def _array(table: pa.Table, name: str, type_: pa.DataType) -> pa.Array:
    """One column as a single Array of `type_` (all nulls when the column is missing)."""
    if name not in table.column_names:
        return pa.nulls(table.num_rows, type_)
    column = table[name].combine_chunks()
    return column if column.type == type_ else column.cast(type_)


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (numpy 2's hash-based np.unique is slower than a sort here)."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if values.size else values


def _dense(*cols: np.ndarray) -> np.ndarray:
    """Ids 0..m-1 for the distinct tuples of non-negative int columns (in sorted tuple order)."""
    out = np.unique(cols[0], return_inverse=True)[1].reshape(-1)
    for col in cols[1:]:
        col = np.unique(col, return_inverse=True)[1].reshape(-1)
        out = np.unique(out * (int(col.max(initial=0)) + 1) + col, return_inverse=True)[1].reshape(-1)
    return out


# --- Distinct-n ---------------------------------------------------------------------------


def _distinct(
    keys: np.ndarray, ch: np.ndarray, n_ch: int, dense: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """n-gram totals per channel, distinct n-grams per channel, distinct n-grams overall.

    `dense`: the keys already are 0..m-1 with every value used (token ids).
    """
    total = np.bincount(ch, minlength=n_ch).astype(np.float64)
    if keys.size == 0:
        return total, np.zeros(n_ch), 0
    if dense:
        n_distinct = int(keys.max()) + 1
    else:  # hashing, not sorting: the n-gram arrays are the big ones
        enc = pc.dictionary_encode(pa.array(keys))
        n_distinct, keys = len(enc.dictionary), enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    per_channel = pc.unique(pa.array(ch * n_distinct + keys)).to_numpy() // n_distinct
    return total, np.bincount(per_channel, minlength=n_ch).astype(np.float64), n_distinct


# --- attribute coverage --------------------------------------------------------------------


def _fact_units(fact: str) -> tuple[str, ...]:
    """What must show up in a copy to name this fact: content words, and Han bigrams ("a b") or lone chars."""
    toks = tokens(fact)
    words = [t for t in toks if not _HAN.fullmatch(t)]
    units = [w for w in words if w not in STOPWORDS] or words
    run: list[str] = []
    for t in toks + [""]:  # "" closes the last Han run
        if t and _HAN.fullmatch(t):
            run.append(t)
            continue
        if len(run) == 1:
            units.append(run[0])
        else:
            units.extend(f"{a} {b}" for a, b in zip(run, run[1:]))
        run = []
    return tuple(dict.fromkeys(units))


def _attribute_values(raw: Any) -> list[str]:
    """The attribute values a copy could state: JSON strings, and numbers as written."""
    if not raw or not isinstance(raw, str):
        return []
    try:
        obj = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(obj, dict):
        return []
    out = []
    for v in obj.values():
        if isinstance(v, bool):  # true/false is not something a copy states
            continue
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, int):
            out.append(str(v))
        elif isinstance(v, float) and math.isfinite(v):
            out.append(str(int(v)) if v.is_integer() else repr(v))
    return out


def _product_facts(products: pa.Table, wanted: pa.Array) -> dict[str, list[tuple[str, ...]]]:
    """product_id -> its facts (each as its units), for the products the copies name; no empty lists."""
    if products.num_rows == 0 or "product_id" not in products.column_names or len(wanted) == 0:
        return {}
    ids = _array(products, "product_id", pa.string())
    products = products.filter(pc.is_in(ids, value_set=wanted))
    ids = _array(products, "product_id", pa.string()).to_pylist()
    attrs = _array(products, "attributes", pa.string()).to_pylist()
    points = _array(products, "selling_points", pa.list_(pa.string())).to_pylist()
    facts: dict[str, list[tuple[str, ...]]] = {}
    seen: set[str] = set()
    for pid, attr, sp in zip(ids, attrs, points):
        if pid in seen:
            continue  # first row of a duplicated product wins
        seen.add(pid)
        texts = [p for p in (sp or []) if isinstance(p, str)] + _attribute_values(attr)
        found = list(dict.fromkeys(u for u in map(_fact_units, texts) if u))
        if found:
            facts[pid] = found
    return facts


def _coverage(
    pids: pa.Array,
    facts: dict,
    vocab: pa.Array,
    ids: np.ndarray,
    tok_row: np.ndarray,
    bigrams: np.ndarray,
    bigram_row: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per copy: its product's fact count, and how many of those facts it names.

    Copy and fact units become the same integer keys (token id; V + bigram key),
    so naming a fact is an integer join of (product, unit) pairs.
    """
    k, n_vocab = len(pids), len(vocab)
    pcode = pc.index_in(pids, value_set=pa.array(list(facts), pa.string()))
    pcode = pc.fill_null(pcode, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    per_product = np.array([len(fs) for fs in facts.values()] + [0], dtype=np.int64)
    n_facts = per_product[pcode]  # -1 -> the trailing 0
    named = np.zeros(k, dtype=np.int64)
    if not facts or not (n_facts > 0).any():
        return n_facts, named

    fact_tokens = sorted({t for fs in facts.values() for units in fs for u in units for t in u.split(" ")})
    tid = dict(zip(fact_tokens, pc.index_in(pa.array(fact_tokens, pa.string()), value_set=vocab).to_pylist()))

    def key(unit: str) -> int:
        parts = [tid[t] for t in unit.split(" ")]
        if None in parts:
            return -1  # no copy has this token: the unit is never present
        return parts[0] if len(parts) == 1 else n_vocab + parts[0] * n_vocab + parts[1]

    f_prod, f_key, f_fact, need = [], [], [], []
    for p, fs in enumerate(facts.values()):
        for units in fs:
            need.append(len(units))
            for unit in units:
                f_prod.append(p)
                f_key.append(key(unit))
                f_fact.append(len(need) - 1)
    f_key_np = np.array(f_key, dtype=np.int64)
    unit_set = pa.array(np.unique(f_key_np[f_key_np >= 0]))
    if len(unit_set) == 0:
        return n_facts, named

    def unit_no(keys: np.ndarray) -> np.ndarray:  # position in unit_set, -1 when not a fact unit
        found = pc.index_in(pa.array(keys), value_set=unit_set)
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    n_units = len(unit_set)
    found = []
    for keys, rows in ((ids, tok_row), (n_vocab + bigrams, bigram_row)):  # one at a time: less memory
        u = unit_no(keys)
        hit = (u >= 0) & (pcode[rows] >= 0)
        found.append(rows[hit] * n_units + u[hit])
    pairs = _unique(np.concatenate(found))  # (copy, unit), each unit once per copy
    if pairs.size == 0:
        return n_facts, named
    c_row = pairs // n_units
    present = pa.table({"j": pcode[c_row] * n_units + pairs % n_units, "row": c_row})
    known = f_key_np >= 0
    f_unit = unit_no(f_key_np[known])
    fact_units = pa.table({"j": np.array(f_prod)[known] * n_units + f_unit, "fact": np.array(f_fact)[known]})
    matched = present.join(fact_units, keys="j", join_type="inner")
    if matched.num_rows == 0:
        return n_facts, named
    n_all = len(need)
    row_fact, units_seen = np.unique(
        matched["row"].to_numpy() * n_all + matched["fact"].to_numpy(), return_counts=True
    )
    is_named = 2 * units_seen >= np.asarray(need)[row_fact % n_all]  # at least half of the fact's units
    return n_facts, np.bincount(row_fact[is_named] // n_all, minlength=k)


def attribute_coverage_rows(copies: pa.Table, products: pa.Table) -> np.ndarray:
    """Per copy (columns ``text``, ``product_id``): the share of its product's
    facts it names, as ``attribute_coverage_mean`` counts them; NaN when the
    product has no facts or the copy is empty. What the candidate ranking
    compares (factory/candidates.py)."""
    n = copies.num_rows
    out = np.full(n, np.nan)
    text = _array(copies, "text", pa.string())
    filled = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
    kept = np.flatnonzero(filled.to_numpy(zero_copy_only=False).astype(bool))
    if not kept.size:
        return out
    take = pa.array(kept)
    tok, tok_row = _column_tokens(text.take(take))
    tok_row = tok_row.astype(np.int64)
    vocab = tok.dictionary_encode()
    ids = vocab.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    same = tok_row[:-1] == tok_row[1:]
    bigrams = ids[:-1][same] * len(vocab.dictionary) + ids[1:][same]
    pid = _array(copies, "product_id", pa.string()).take(take)
    facts = _product_facts(products, pc.unique(pid.drop_null()))
    n_facts, named = _coverage(pid, facts, vocab.dictionary, ids, tok_row, bigrams, tok_row[:-1][same])
    has = n_facts > 0
    out[kept[has]] = named[has] / n_facts[has]
    return out


# --- personalization -------------------------------------------------------------------


def _runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of equal values in a sorted array, plus its end."""
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return np.concatenate([[0], change, [sorted_keys.size]]).astype(np.int64)


def _rank_in_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    bounds = _runs(sorted_keys)
    return np.arange(sorted_keys.size) - np.repeat(bounds[:-1], np.diff(bounds))


def _pairs_within(keys: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, with keys[i] == keys[j] in a sorted array whose runs are at most `span` long."""
    first, second = [], []
    for d in range(1, span):
        same = np.flatnonzero(keys[:-d] == keys[d:])
        first.append(same)
        second.append(same + d)
    return np.concatenate(first), np.concatenate(second)


def _mean_dissimilarity(
    g: np.ndarray, u: np.ndarray, row: np.ndarray, ids: np.ndarray, starts: np.ndarray, n_groups: int
) -> np.ndarray:
    """Per group: mean 1 - Jaccard(token sets) over pairs of copies of different users.

    The copies come sorted by group, at most GROUP_CAP per group, so every pair
    and every shared token is found by comparing entries at most GROUP_CAP - 1
    apart: vectorised, no Python loop over pairs.
    """
    n = row.size
    length = starts[row + 1] - starts[row]
    owner = np.repeat(np.arange(n), length)  # copy of each token entry
    pos = np.repeat(starts[row], length) + _rank_in_runs(owner)
    n_vocab = int(ids.max(initial=0)) + 1
    owner, token = np.divmod(_unique(owner * n_vocab + ids[pos]), n_vocab)  # each token once per copy
    set_size = np.bincount(owner, minlength=n)

    # runs of one token in one group; stable, so the copies in a run stay ascending
    key = g[owner] * n_vocab + token
    order = np.argsort(key, kind="stable")
    a, b = _pairs_within(key[order], GROUP_CAP)
    shared, shared_n = np.unique(owner[order][a] * n + owner[order][b], return_counts=True)

    a, b = _pairs_within(g, GROUP_CAP)  # every pair of copies in a group
    cross = u[a] != u[b]
    a, b = a[cross], b[cross]
    pair = a * n + b
    inter = np.zeros(pair.size, dtype=np.int64)  # tokens in common; 0 for pairs sharing none
    if shared.size:
        at = np.minimum(np.searchsorted(shared, pair), shared.size - 1)
        found = shared[at] == pair
        inter[found] = shared_n[at[found]]
    union = set_size[a] + set_size[b] - inter
    dissim = np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0)  # two token-less copies are alike
    return np.bincount(g[a], weights=dissim, minlength=n_groups) / np.bincount(g[a], minlength=n_groups)


def _personalization(
    pid: pa.Array,
    user: pa.Array,
    ch: np.ndarray,
    n_ch: int,
    text: pa.Array,
    ids: np.ndarray,
    starts: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per channel: groups measured, copies in them, size-weighted dissimilarity, identical copies."""
    out = {
        "groups": np.zeros(n_ch),
        "copies": np.zeros(n_ch),
        "weighted": np.zeros(n_ch),
        "identical": np.zeros(n_ch),
    }
    p = pc.fill_null(pid.dictionary_encode().indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    u_enc = user.dictionary_encode()
    by_id = np.empty(len(u_enc.dictionary), dtype=np.int64)  # users ranked by id, not by first sight
    by_id[pc.sort_indices(u_enc.dictionary).to_numpy()] = np.arange(len(u_enc.dictionary))
    u = pc.fill_null(u_enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    row = np.flatnonzero((p >= 0) & (u >= 0))
    if row.size == 0:
        return out
    u = by_id[u[row]]
    g = _dense(p[row], ch[row])  # (product, channel) group
    _, first = np.unique(_dense(g, u), return_index=True)
    keep = np.bincount(g[first])[g] >= 2  # groups with copies for at least two users
    row, u, g = row[keep], u[keep], g[keep]
    if row.size == 0:
        return out
    g = _dense(g)
    n_groups = int(g.max()) + 1
    g_ch = np.zeros(n_groups, dtype=np.int64)
    g_ch[g] = ch[row]
    size = np.bincount(g).astype(np.float64)
    out["groups"] = np.bincount(g_ch, minlength=n_ch).astype(np.float64)
    out["copies"] = np.bincount(g_ch, weights=size, minlength=n_ch)

    # identical: same stripped, case-folded text as a copy of another user in the group
    norm = pc.utf8_lower(pc.utf8_trim_whitespace(text.take(pa.array(row))))
    other = pc.invert(pc.string_is_ascii(norm))  # lower() is casefold() for ASCII; Python for the rest
    if pc.any(other).as_py():
        folded = pa.array([t.casefold() for t in norm.filter(other).to_pylist()], pa.string())
        norm = pc.replace_with_mask(norm, other, folded)
    gt = _dense(g, norm.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64))
    _, first = np.unique(_dense(gt, u), return_index=True)
    identical = np.bincount(gt[first])[gt] >= 2
    out["identical"] = np.bincount(g_ch[g[identical]], minlength=n_ch).astype(np.float64)

    # the <= GROUP_CAP copies compared: each user's first copy (users by id), then second copies, ...
    gu = _dense(g, u)
    order = np.lexsort((row, gu))
    rank = np.empty(row.size, dtype=np.int64)  # 0 for a user's first copy in the group, 1 for the second...
    rank[order] = _rank_in_runs(gu[order])
    order = np.lexsort((row, u, rank, g))
    picked = np.sort(order[_rank_in_runs(g[order]) < GROUP_CAP])  # row order within a group: g, then row
    picked = picked[np.argsort(g[picked], kind="stable")]
    dissim = _mean_dissimilarity(g[picked], u[picked], row[picked], ids, starts, n_groups)
    out["weighted"] = np.bincount(g_ch, weights=size * dissim, minlength=n_ch)
    return out


# --- main -----------------------------------------------------------------------------------


def _div(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    return [_share(a, b) for a, b in zip(num.tolist(), den.tolist())]


def corpus_figures(copies: pa.Table, products: pa.Table, max_rows: int = 200_000, seed: int = 0) -> dict:
    """Quality figures for one run's copy; see the module docstring for what each means."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    rows = copies.num_rows
    sampled = rows > max_rows
    if sampled:
        pick = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False, shuffle=False))
        copies = copies.take(pa.array(pick))
    n = copies.num_rows

    text = _array(copies, "text", pa.string())
    filled = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
    filled_np = filled.to_numpy(zero_copy_only=False).astype(bool)
    chan = pc.fill_null(_array(copies, "channel", pa.string()), UNKNOWN).dictionary_encode()
    channels = chan.dictionary.to_pylist()
    n_ch = len(channels)
    codes = chan.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    per_channel = lambda c, w=None: np.bincount(c, weights=w, minlength=n_ch).astype(np.float64)  # noqa: E731

    # --- status, numeric fidelity, length: column arithmetic ----------------------------------
    status_share: dict[str, float | None] = {}
    if n:
        status = pc.fill_null(_array(copies, "status", pa.string()), UNKNOWN)
        counts = pc.value_counts(status)
        status_share = {
            v: _r(c / n)
            for v, c in sorted(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
        }

    fid = _array(copies, "numeric_fidelity", pa.float64()).to_numpy(zero_copy_only=False)
    has_num = ~np.isnan(fid)  # null -> NaN
    fid = np.where(has_num, fid, 0.0)
    with_numbers = int(has_num.sum())
    numeric = {
        "rows_with_numbers": with_numbers,
        "mean": _share(fid.sum(), with_numbers),
        "fully_supported_share": _share(int((fid >= 1.0).sum()), with_numbers),
    }

    within = pc.less_equal(
        _array(copies, "copy_length", pa.int64()), _array(copies, "copy_length_limit", pa.int64())
    )  # null: unknown
    len_measured = filled_np & ~within.is_null().to_numpy(zero_copy_only=False)
    len_ok = len_measured & pc.fill_null(within, False).to_numpy(zero_copy_only=False)

    # --- text figures over the non-empty copies ------------------------------------------------
    zero = np.zeros(n_ch)  # never written to
    uni_total = uni_distinct = bi_total = bi_distinct = cov_rows = cov_hit = cov_frac = zero
    all_uni = all_bi = 0
    pers = {"groups": zero, "copies": zero, "weighted": zero, "identical": zero}
    kept = np.flatnonzero(filled_np)
    if kept.size:
        take = pa.array(kept)
        ktext, kch = text.take(take), codes[kept]
        tok, tok_row = _column_tokens(ktext)
        tok_row = tok_row.astype(np.int64)
        vocab = tok.dictionary_encode()
        ids = vocab.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        n_vocab = len(vocab.dictionary)
        same = tok_row[:-1] == tok_row[1:]  # adjacent tokens of one copy
        bigrams = ids[:-1][same] * n_vocab + ids[1:][same]
        bigram_row = tok_row[:-1][same]

        uni_total, uni_distinct, all_uni = _distinct(ids, kch[tok_row], n_ch, dense=True)
        bi_total, bi_distinct, all_bi = _distinct(bigrams, kch[bigram_row], n_ch)

        pid = _array(copies, "product_id", pa.string()).take(take)
        facts = _product_facts(products, pc.unique(pid.drop_null()))
        n_facts, named = _coverage(pid, facts, vocab.dictionary, ids, tok_row, bigrams, bigram_row)
        has_facts = n_facts > 0
        cov_rows = per_channel(kch[has_facts])
        cov_hit = per_channel(kch[has_facts & (named > 0)])
        cov_frac = per_channel(kch[has_facts], named[has_facts] / n_facts[has_facts])

        starts = np.concatenate([[0], np.cumsum(np.bincount(tok_row, minlength=kept.size))])
        user = _array(copies, "user_id", pa.string()).take(take)
        pers = _personalization(pid, user, kch, n_ch, ktext, ids, starts)

    fid_n = per_channel(codes, has_num.astype(np.float64))
    columns = {
        "rows": np.bincount(codes, minlength=n_ch).tolist(),
        "distinct_1": _div(uni_distinct, uni_total),
        "distinct_2": _div(bi_distinct, bi_total),
        "personalization": _div(pers["weighted"], pers["copies"]),
        "identical_copy_share": _div(pers["identical"], pers["copies"]),
        "attribute_coverage": _div(cov_hit, cov_rows),
        "length_compliance": _div(per_channel(codes[len_ok]), per_channel(codes[len_measured])),
        "numeric_fidelity_mean": _div(per_channel(codes, fid), fid_n),
    }
    by_channel = {
        channels[c]: {name: values[c] for name, values in columns.items()}
        for c in sorted(range(n_ch), key=channels.__getitem__)
    }

    return {
        "rows": int(rows),
        "rows_measured": int(n),
        "sampled": bool(sampled),
        "distinct_1": _share(all_uni, uni_total.sum()),
        "distinct_2": _share(all_bi, bi_total.sum()),
        "personalization": _share(pers["weighted"].sum(), pers["copies"].sum()),
        "personalization_groups": int(pers["groups"].sum()),
        "identical_copy_share": _share(pers["identical"].sum(), pers["copies"].sum()),
        "attribute_coverage": _share(cov_hit.sum(), cov_rows.sum()),
        "attribute_coverage_mean": _share(cov_frac.sum(), cov_rows.sum()),
        "numeric_fidelity": numeric,
        "length_compliance": _share(int(len_ok.sum()), int(len_measured.sum())),
        "status_share": status_share,
        "by_channel": by_channel,
    }
