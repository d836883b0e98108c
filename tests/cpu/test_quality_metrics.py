"""Corpus quality figures: hand-computed values on tiny tables, plus a brute-force cross-check."""

import itertools
import json
import math
import random

import pyarrow as pa
import pytest

from factory.quality.metrics import STOPWORDS, _column_tokens, corpus_figures, tokens

COPIES_SCHEMA = pa.schema(
    [
        ("channel", pa.string()),
        ("user_id", pa.string()),
        ("product_id", pa.string()),
        ("text", pa.string()),
        ("status", pa.string()),
        ("numeric_fidelity", pa.float64()),
        ("copy_length", pa.int32()),
        ("copy_length_limit", pa.int32()),
    ]
)
PRODUCTS_SCHEMA = pa.schema(
    [
        ("product_id", pa.string()),
        ("title", pa.string()),
        ("brand", pa.string()),
        ("description", pa.string()),
        ("attributes", pa.string()),
        ("selling_points", pa.list_(pa.string())),
    ]
)


def copy_row(
    text, user="U1", product="P0", channel="push", status="accepted", fidelity=None, length=None, limit=100
):
    return {
        "channel": channel,
        "user_id": user,
        "product_id": product,
        "text": text,
        "status": status,
        "numeric_fidelity": fidelity,
        "copy_length": len(text or "") if length is None else length,
        "copy_length_limit": limit,
    }


def product_row(pid, attributes=None, selling_points=None):
    return {
        "product_id": pid,
        "title": "t",
        "brand": "b",
        "description": "d",
        "attributes": attributes,
        "selling_points": selling_points,
    }


def copies_table(rows):
    return pa.Table.from_pylist(rows, schema=COPIES_SCHEMA)


def products_table(rows=()):
    return pa.Table.from_pylist(list(rows), schema=PRODUCTS_SCHEMA)


def figures(rows, products=(), **kw):
    out = corpus_figures(copies_table(rows), products_table(products), **kw)
    assert_plain_json(out)
    return out


def assert_plain_json(value):
    """Only dict/list/str/int/float/bool/None, no numpy scalars, no NaN: it round-trips through JSON."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str
            assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain_json(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), (value, type(value))
        if type(value) is float:
            assert math.isfinite(value) and value == round(value, 4)
    json.dumps(value, allow_nan=False)


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_latin_words_lowercased_and_one_token_per_han_char():
    assert tokens("Soft LINEN, soft-touch!") == ["soft", "linen", "soft", "touch"]
    assert tokens("100%纯棉 T恤 café_2x") == ["100", "纯", "棉", "t", "恤", "café_2x"]
    assert tokens("") == [] and tokens(None) == [] and tokens(" ，。!") == []


def test_column_tokenizer_agrees_with_tokens():
    texts = [
        "Soft LINEN, soft-touch!",
        "100%纯棉 T恤 café_2x",
        "",
        "温和不刺激。Gentle\tenough\n",
        "Ünïcödé ÉCOLE",
        "emoji 🎉 ok",
        "ｆｕｌｌｗｉｄｔｈ ２０２６",
        "かな カナ 한국어",
        "a_b__c 3.5kg",
        "  ,,  ",
    ]
    flat, rows = _column_tokens(pa.array(texts))
    got = [[] for _ in texts]
    for tok, row in zip(flat.to_pylist(), rows.tolist()):
        got[row].append(tok)
    assert got == [tokens(t) for t in texts]


# --- Distinct-n -------------------------------------------------------------------------------


def test_distinct_english_by_hand():
    # "Soft linen shirt"        -> soft linen shirt           (3 unigrams, 2 bigrams)
    # "soft linen, soft cotton" -> soft linen soft cotton     (4 unigrams, 3 bigrams)
    # unigrams: 7 in all, distinct {soft, linen, shirt, cotton} = 4          -> 4/7 = 0.5714
    # bigrams: soft·linen, linen·shirt | soft·linen, linen·soft, soft·cotton  -> 5 in all, 4 distinct = 0.8
    # ("shirt soft" spans two copies: not a bigram)
    out = figures([copy_row("Soft linen shirt"), copy_row("soft linen, soft cotton", user="U2")])
    assert out["distinct_1"] == 0.5714
    assert out["distinct_2"] == 0.8
    assert (
        out["by_channel"]["push"]["distinct_1"] == 0.5714 and out["by_channel"]["push"]["distinct_2"] == 0.8
    )


def test_distinct_chinese_by_hand_and_per_channel():
    # 温和不刺激 -> 温 和 不 刺 激 (5 chars, bigrams 温和 和不 不刺 刺激)
    # 温和补水   -> 温 和 补 水   (4 chars, bigrams 温和 和补 补水)
    # distinct_1 = 7 distinct / 9 = 0.7778 ; distinct_2 = 6 distinct (温和 twice) / 7 = 0.8571
    # the empty sms copy has no tokens: sms has no Distinct-n at all
    out = figures([copy_row("温和不刺激"), copy_row("温和补水", user="U2"), copy_row("   ", channel="sms")])
    assert (out["distinct_1"], out["distinct_2"]) == (0.7778, 0.8571)
    assert out["by_channel"]["push"]["distinct_1"] == 0.7778
    assert out["by_channel"]["sms"]["distinct_1"] is None and out["by_channel"]["sms"]["rows"] == 1


def test_distinct_repeated_copy_scores_low():
    same = [copy_row("buy now buy now", user=f"U{i}") for i in range(4)]
    # unigrams: 16 in all, 2 distinct = 0.125 ; bigrams: 12 in all (3 per copy), 2 distinct (buy·now, now·buy)
    out = figures(same)
    assert out["distinct_1"] == 0.125 and out["distinct_2"] == round(2 / 12, 4)


# --- personalization ---------------------------------------------------------------------------


def test_identical_copies_for_two_users_are_not_personal():
    out = figures([copy_row("Soft linen shirt", user="U1"), copy_row("  soft LINEN shirt ", user="U2")])
    assert out["personalization"] == 0.0
    assert out["identical_copy_share"] == 1.0
    assert out["personalization_groups"] == 1


def test_disjoint_copies_are_fully_personal():
    out = figures([copy_row("alpha beta", user="U1"), copy_row("gamma delta", user="U2")])
    assert out["personalization"] == 1.0
    assert out["identical_copy_share"] == 0.0


def test_personalization_groups_weights_and_same_user_pairs():
    rows = [
        # P1/push: identical for two users -> dissimilarity 0, both copies identical
        copy_row("Soft linen shirt", user="U1", product="P1"),
        copy_row("soft linen shirt", user="U2", product="P1"),
        # P2/push: U1 twice, U2 once. Pairs of *different* users only:
        #   U1 "red shoes" vs U2 "red shoes": 1 - 2/2 = 0 ; U1 "blue shoes" vs U2: 1 - 1/3 = 2/3
        #   mean 1/3 (counting the U1-U1 pair too would give 4/9); identical: 2 of 3 copies
        copy_row("red shoes", user="U1", product="P2"),
        copy_row("blue shoes", user="U1", product="P2"),
        copy_row("red shoes", user="U2", product="P2"),
        # P2/sms: a different channel is a different group: disjoint words -> 1.0
        copy_row("alpha beta", user="U1", product="P2", channel="sms"),
        copy_row("gamma delta", user="U3", product="P2", channel="sms"),
        # P3: one user only -> no group; P4: second user's copy is empty -> no group
        copy_row("solo copy", user="U1", product="P3"),
        copy_row("solo again", user="U1", product="P3"),
        copy_row("lonely", user="U1", product="P4"),
        copy_row("", user="U2", product="P4"),
    ]
    out = figures(rows)
    assert out["personalization_groups"] == 3
    # weighted by group size: (2*0 + 3*(1/3) + 2*1) / 7 = 3/7
    assert out["personalization"] == round(3 / 7, 4)
    # identical copies: 2 (P1) + 2 (P2/push) + 0 of 7 copies in groups
    assert out["identical_copy_share"] == round(4 / 7, 4)
    assert out["by_channel"]["push"]["personalization"] == round(1 / 5, 4)  # (2*0 + 3*(1/3)) / 5
    assert out["by_channel"]["push"]["identical_copy_share"] == 0.8
    assert out["by_channel"]["sms"]["personalization"] == 1.0


def test_at_most_ten_copies_compared_per_group_chosen_by_user_id():
    # 12 users; u00..u09 share one copy, u10 and u11 (listed first) differ. The 10 copies
    # compared are the first 10 users by id, so no pair differs; identical share counts all 12.
    rows = [copy_row("fresh different words", user="u10"), copy_row("other unrelated text", user="u11")]
    rows += [copy_row("the same copy", user=f"u{i:02d}") for i in range(10)]
    out = figures(rows)
    assert out["personalization"] == 0.0
    assert out["identical_copy_share"] == round(10 / 12, 4)
    # each user's first copy comes first: b's lone copy (last row) is compared although user a has
    # 15 copies before it. Picked: a0, b, a1..a8 -> pairs with b: a0 (identical, 0) and a1..a8
    # ({copy, number, i} vs {copy, number, 0}: 1 - 2/4 each) -> (0 + 8 * 0.5) / 9
    rows = [copy_row(f"copy number {i}", user="a") for i in range(15)] + [copy_row("copy number 0", user="b")]
    out = figures(rows)
    assert out["personalization"] == round(4 / 9, 4)
    assert out["identical_copy_share"] == round(2 / 16, 4)


def test_a_users_own_repeats_are_not_identical_copies():
    # U1's two copies match each other, not another user's copy; pairs U1-U1 are not compared
    out = figures(
        [
            copy_row("repeat me", user="U1"),
            copy_row("Repeat me", user="U1"),
            copy_row("something else", user="U2"),
        ]
    )
    assert out["identical_copy_share"] == 0.0
    assert out["personalization"] == 1.0


def test_no_group_gives_null_personalization():
    out = figures([copy_row("just one user", user="U1"), copy_row("still one user", user="U1")])
    assert out["personalization"] is None and out["identical_copy_share"] is None
    assert out["personalization_groups"] == 0


# --- attribute coverage -------------------------------------------------------------------------


PRODUCTS = [
    # facts: "keeps you cool in the heat" (content: keeps you cool heat), "made in portugal"
    # (made portugal), "linen", "sand", "200"; true is not a fact -> 5 facts
    product_row(
        "P1",
        json.dumps({"material": "linen", "color": "sand", "weight": 200, "organic": True}),
        ["Keeps you cool in the heat", "Made in Portugal"],
    ),
    # facts: 温和不刺激 (bigrams 温和 和不 不刺 刺激), 亚麻 (bigram 亚麻), 棉 (lone char) -> 3 facts
    product_row("P2", json.dumps({"材质": "亚麻", "面料": "棉"}, ensure_ascii=False), ["温和不刺激"]),
    product_row("P3", "{not json", None),  # no facts: its copies are not counted
    product_row("P4", None, []),
]


def test_attribute_coverage_by_hand():
    rows = [
        # cool + heat = 2 of 4 units of fact 1 (half counts); linen; not portugal, sand, 200 -> 2/5
        copy_row("Cool linen for the heat of summer", product="P1"),
        copy_row("Nothing relevant here", product="P1"),  # 0/5
        copy_row("温和配方，亚麻质感", product="P2"),  # 温和 is 1 of 4 bigrams: no; 亚麻 yes; 棉 no -> 1/3
        copy_row("和不刺", product="P2"),  # 和不 + 不刺 = 2 of 4 bigrams: named -> 1/3
        copy_row("linen cool heat", product="P3"),  # no facts: skipped
        copy_row("linen", product="P4"),  # no facts: skipped
        copy_row("", product="P1"),  # empty: skipped
        copy_row("linen", product="P-unknown"),  # product not in the table: skipped
    ]
    out = figures(rows, PRODUCTS)
    assert out["attribute_coverage"] == 0.75  # 3 of 4 copies name a fact
    assert out["attribute_coverage_mean"] == round((2 / 5 + 0 + 1 / 3 + 1 / 3) / 4, 4)
    assert out["by_channel"]["push"]["attribute_coverage"] == 0.75


def test_attribute_coverage_fact_not_mentioned_and_word_boundaries():
    products = [product_row("P1", json.dumps({"scent": "tea", "size": 2.5}), ["Free of the dyes"])]
    rows = [
        copy_row("Steamy instead of free", product="P1"),  # "tea" inside "steamy" is not the word tea;
        # "free of the dyes": content free, dyes -> 1 of 2 = half -> named; 2.5 -> units 2, 5: none -> 1/3
        copy_row("Only 2.5 left", product="P1"),  # 2 and 5 both present -> named -> 1/3
        copy_row("Nothing here", product="P1"),
    ]
    out = figures(rows, products)
    assert out["attribute_coverage"] == round(2 / 3, 4)
    assert out["attribute_coverage_mean"] == round((1 / 3 + 1 / 3 + 0) / 3, 4)


def test_no_facts_anywhere_gives_null_coverage():
    out = figures([copy_row("anything", product="P3")], PRODUCTS)
    assert out["attribute_coverage"] is None and out["attribute_coverage_mean"] is None


# --- numeric fidelity, length, status ------------------------------------------------------------


def test_numeric_fidelity_ignores_null_rows_and_length_compliance():
    rows = [
        copy_row("a", fidelity=1.0, length=10, limit=20, status="accepted"),
        copy_row("b", fidelity=0.5, length=30, limit=20, status="review"),
        copy_row("c", fidelity=None, length=20, limit=20, status="accepted"),  # no numbers: ignored
        copy_row(
            "d", fidelity=1.2, length=5, limit=None, status="rejected", channel="sms"
        ),  # no limit: not counted
        copy_row("", fidelity=None, length=0, limit=20, status="rejected"),  # empty: not counted for length
        copy_row("e", fidelity=float("nan"), length=1, limit=20, status=None),  # NaN = no numbers
    ]
    out = figures(rows)
    assert out["numeric_fidelity"] == {"rows_with_numbers": 3, "mean": 0.9, "fully_supported_share": 0.6667}
    assert out["length_compliance"] == 0.75  # a, c, e within; b over; d and "" not counted
    assert out["status_share"] == {
        "accepted": round(2 / 6, 4),
        "rejected": round(2 / 6, 4),
        "review": round(1 / 6, 4),
        "unknown": round(1 / 6, 4),
    }
    assert out["by_channel"]["push"]["numeric_fidelity_mean"] == 0.75
    assert out["by_channel"]["sms"]["numeric_fidelity_mean"] == 1.2
    assert out["by_channel"]["sms"]["length_compliance"] is None
    assert out["by_channel"]["push"]["rows"] == 5 and out["by_channel"]["sms"]["rows"] == 1


def test_no_numbers_gives_null_fidelity():
    out = figures([copy_row("no numbers here")])
    assert out["numeric_fidelity"] == {"rows_with_numbers": 0, "mean": None, "fully_supported_share": None}


# --- sampling and edge cases ----------------------------------------------------------------------


def test_sampling_is_flagged_and_deterministic():
    rows = [
        copy_row(f"copy {i} word{i}", user=f"U{i}", status="accepted" if i % 2 else "review")
        for i in range(50)
    ]
    small = figures(rows, max_rows=20, seed=7)
    assert (small["rows"], small["rows_measured"], small["sampled"]) == (50, 20, True)
    assert small["by_channel"]["push"]["rows"] == 20
    assert small == figures(rows, max_rows=20, seed=7)
    # every measured row is one of the 50: shares are whole multiples of 1/20
    assert all(abs(v * 20 - round(v * 20)) < 1e-9 for v in small["status_share"].values())
    assert [figures(rows, max_rows=20, seed=s)["status_share"] for s in range(6)].count(
        small["status_share"]
    ) < 6
    full = figures(rows, max_rows=50)
    assert (full["rows_measured"], full["sampled"]) == (50, False)
    assert full["status_share"] == {"accepted": 0.5, "review": 0.5}
    with pytest.raises(ValueError):
        figures(rows, max_rows=0)


EMPTY_FIGURES = {
    "distinct_1": None,
    "distinct_2": None,
    "personalization": None,
    "personalization_groups": 0,
    "identical_copy_share": None,
    "attribute_coverage": None,
    "attribute_coverage_mean": None,
    "length_compliance": None,
}


def test_empty_table():
    out = figures([], PRODUCTS)
    assert out == {
        "rows": 0,
        "rows_measured": 0,
        "sampled": False,
        **EMPTY_FIGURES,
        "numeric_fidelity": {"rows_with_numbers": 0, "mean": None, "fully_supported_share": None},
        "status_share": {},
        "by_channel": {},
    }


def test_only_empty_copies():
    out = figures([copy_row("", user="U1"), copy_row(None, user="U2", status="rejected", channel=None)])
    assert (out["rows"], out["rows_measured"]) == (2, 2)
    assert {k: out[k] for k in EMPTY_FIGURES} == EMPTY_FIGURES
    assert out["status_share"] == {"accepted": 0.5, "rejected": 0.5}
    assert set(out["by_channel"]) == {"push", "unknown"}


def test_missing_optional_columns_and_chunked_input():
    table = copies_table([copy_row("alpha beta", user="U1"), copy_row("alpha gamma", user="U2")])
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    assert chunked["text"].num_chunks == 2
    out = corpus_figures(
        chunked.drop_columns(["numeric_fidelity", "copy_length_limit"]),
        products_table().drop_columns(["attributes", "selling_points"]),
    )
    assert out["distinct_1"] == 0.75 and out["personalization"] == round(1 - 1 / 3, 4)
    assert out["length_compliance"] is None and out["numeric_fidelity"]["rows_with_numbers"] == 0


# --- brute force cross-check ------------------------------------------------------------------------


def reference(rows, products):
    """The definitions, written the slow and obvious way (no sampling)."""
    kept = [r for r in rows if r["text"] and r["text"].strip()]
    toks = [tokens(r["text"]) for r in kept]
    uni = [t for ts in toks for t in ts]
    bi = [b for ts in toks for b in zip(ts, ts[1:])]

    groups = {}
    for r, ts in zip(kept, toks):
        if r["product_id"] is not None and r["user_id"] is not None:
            groups.setdefault((r["product_id"], r["channel"]), []).append((r, set(ts)))
    weighted = size = identical = n_groups = 0
    for members in groups.values():
        if len({r["user_id"] for r, _ in members}) < 2:
            continue
        n_groups += 1
        seen, keyed = {}, []
        for i, (r, s) in enumerate(members):
            keyed.append((seen.get(r["user_id"], 0), r["user_id"], i, s))
            seen[r["user_id"]] = seen.get(r["user_id"], 0) + 1
        picked = sorted(keyed)[:10]
        d = [
            1 - (len(a & b) / len(a | b) if a | b else 1.0)
            for (_, ua, _, a), (_, ub, _, b) in itertools.combinations(picked, 2)
            if ua != ub
        ]
        weighted += len(members) * sum(d) / len(d)
        size += len(members)
        norm = [r["text"].strip().casefold() for r, _ in members]
        identical += sum(
            1
            for i, (r, _) in enumerate(members)
            if any(
                norm[j] == norm[i] and members[j][0]["user_id"] != r["user_id"] for j in range(len(members))
            )
        )

    facts = {}
    for p in products:
        attrs = json.loads(p["attributes"]) if p["attributes"] else {}
        values = [v for v in attrs.values() if isinstance(v, str)] + (p["selling_points"] or [])
        facts[p["product_id"]] = [f for f in values if tokens(f)]
    hit = frac = n_cov = 0
    for r, ts in zip(kept, toks):
        fs = facts.get(r["product_id"])
        if not fs:
            continue
        words, grams = set(ts), {a + b for a, b in zip(ts, ts[1:])}
        named = 0
        for f in fs:
            ft = tokens(f)
            latin = [t for t in ft if not ("\u4e00" <= t <= "\u9fff")]
            latin = list(dict.fromkeys([t for t in latin if t not in STOPWORDS] or latin))
            han = "".join(t for t in ft if "\u4e00" <= t <= "\u9fff")  # facts below: one Han run at most
            units = [t in words for t in latin]
            units += (
                [han in words]
                if len(han) == 1
                else [g in grams for g in dict.fromkeys(han[i : i + 2] for i in range(len(han) - 1))]
            )
            named += 2 * sum(units) >= len(units)
        n_cov += 1
        hit += named > 0
        frac += named / len(fs)

    r4 = lambda x: round(x, 4)  # noqa: E731
    return {
        "distinct_1": r4(len(set(uni)) / len(uni)),
        "distinct_2": r4(len(set(bi)) / len(bi)),
        "personalization": r4(weighted / size),
        "identical_copy_share": r4(identical / size),
        "personalization_groups": n_groups,
        "attribute_coverage": r4(hit / n_cov),
        "attribute_coverage_mean": r4(frac / n_cov),
    }


def test_matches_brute_force_reference_on_random_tables():
    rng = random.Random(3)
    words = ["soft", "linen", "cool", "heat", "summer", "the", "of", "gift", "sale", "now", "sand", "fresh"]
    han = "温和不刺激亚麻清凉夏季新品"
    products = [
        product_row(
            f"P{i}",
            json.dumps({"m": rng.choice(words), "c": rng.choice(han) + rng.choice(han)}, ensure_ascii=False),
            [" ".join(rng.sample(words, 3)), "".join(rng.sample(han, 4))],
        )
        for i in range(6)
    ]
    products.append(product_row("P6", None, None))
    for _trial in range(2):
        rows = []
        for _ in range(300):
            if rng.random() < 0.5:
                text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 7)))
            else:
                text = "".join(rng.choice(han) for _ in range(rng.randint(1, 9)))
            rows.append(
                copy_row(
                    text,
                    user=f"U{rng.randrange(25)}",
                    product=f"P{rng.randrange(8)}",
                    channel=rng.choice(["push", "sms"]),
                )
            )
        out = figures(rows, products)
        assert {k: out[k] for k in reference(rows, products)} == reference(rows, products)
