"""The gate probe (issue 21): hand-written hostile and benign copies, English
and Chinese, through QualityGate directly (tests/cpu/gate_probe.yaml).

No hostile copy may be accepted, and each must be caught for its kind's
reason (a hostile copy rejected only for its length would prove nothing);
at least 95% of the benign copies must be accepted. ``python
tests/cpu/test_gate_probe.py`` prints the per-kind table docs/quality-gate.md quotes.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from factory import columns as C
from factory.prompts import apply_campaign, load_templates
from factory.quality.policy import Offer, QualityPolicy
from factory.stages.gate import QualityGate

PROBE = Path(__file__).with_name("gate_probe.yaml")
MIN_KINDS, MIN_HOSTILE, MIN_BENIGN = 12, 150, 60


@lru_cache(maxsize=1)
def probe() -> dict[str, Any]:
    return yaml.safe_load(PROBE.read_text(encoding="utf-8"))


def gate_for(spec: dict[str, Any]) -> tuple[QualityGate, dict[str, dict[str, Any]]]:
    """The gate, and per user what a row carries of its user (the profile lists, the locale and,
    here, an e-mail address)."""
    products = pa.Table.from_pylist([{C.PRODUCT_ID: pid, **p} for pid, p in spec["products"].items()])
    offers = [Offer(**o) for o in spec["campaign"]["offers"]]
    templates = apply_campaign(load_templates(), None, [o.text for o in offers], ["push"])
    gate = QualityGate(
        products,
        QualityPolicy(),
        templates,
        offers=offers,
        competitors=spec["campaign"]["competitors"],
    )
    fields = (C.LOCALE, *C.USERS_LIST_FIELDS, "email")
    return gate, {uid: {f: u.get(f) for f in fields} for uid, u in spec["users"].items()}


def judge(rows: list[list[str]]) -> list[dict[str, Any]]:
    """Each copy's verdict: status, reasons, the published text."""
    gate, users = gate_for(probe())
    batch = pa.Table.from_pylist(
        [{C.PRODUCT_ID: p, C.USER_ID: u, C.CHANNEL: ch, **users[u], C.TEXT: text} for p, u, ch, text in rows]
    )
    return gate(batch).select([C.STATUS, C.REASONS, C.REASON_DETAILS, C.TEXT]).to_pylist()


def figures() -> dict[str, Any]:
    spec = probe()
    kinds = {}
    for kind, group in spec["hostile"].items():
        verdicts = judge(group["copies"])
        kinds[kind] = {
            "copies": len(verdicts),
            "accepted": sum(v[C.STATUS] == C.ACCEPTED for v in verdicts),
            "caught_for_its_reason": sum(bool(set(group["codes"]) & set(v[C.REASONS])) for v in verdicts),
            "missed": [
                (row[3], v[C.STATUS], v[C.REASONS])
                for row, v in zip(group["copies"], verdicts)
                if v[C.STATUS] == C.ACCEPTED or not set(group["codes"]) & set(v[C.REASONS])
            ],
        }
    benign = judge(spec["benign"])
    return {
        "hostile": kinds,
        "hostile_total": sum(k["copies"] for k in kinds.values()),
        "hostile_accepted": sum(k["accepted"] for k in kinds.values()),
        "benign_total": len(benign),
        "benign_accepted": sum(v[C.STATUS] == C.ACCEPTED for v in benign),
        "benign_not_accepted": [
            (row[3], v[C.STATUS], v[C.REASON_DETAILS])
            for row, v in zip(spec["benign"], benign)
            if v[C.STATUS] != C.ACCEPTED
        ],
        "benign_status": dict(Counter(v[C.STATUS] for v in benign)),
    }


def test_the_probe_is_big_enough_and_bilingual():
    spec = probe()
    hostile = [row for group in spec["hostile"].values() for row in group["copies"]]
    assert (
        len(spec["hostile"]) >= MIN_KINDS
        and len(hostile) >= MIN_HOSTILE
        and len(spec["benign"]) >= MIN_BENIGN
    )
    for rows in [g["copies"] for g in spec["hostile"].values()] + [spec["benign"]]:
        locales = {spec["users"][u]["locale"][:2] for _, u, _, _ in rows}
        assert locales == {"en", "zh"}  # every kind in both languages
    assert all(u.get("email") for u in spec["users"].values())  # profiles carry an e-mail address


def test_no_hostile_copy_is_accepted_and_each_is_caught_for_its_reason():
    result = figures()
    missed = {kind: k["missed"] for kind, k in result["hostile"].items() if k["missed"]}
    assert not missed, json.dumps(missed, ensure_ascii=False, indent=1)
    assert result["hostile_accepted"] == 0


def test_benign_copies_are_accepted():
    result = figures()
    share = result["benign_accepted"] / result["benign_total"]
    assert share >= 0.95, json.dumps(result["benign_not_accepted"], ensure_ascii=False, indent=1)


def test_invisible_characters_never_reach_the_published_text():
    rows = probe()["hostile"]["invisible_characters"]["copies"]
    for verdict in judge(rows):
        assert not any(
            ch in verdict[C.TEXT] for ch in "\u200b\u200c\u202e\u202c\u2066\u2069\u2060\ufeff\u00ad"
        )


if __name__ == "__main__":
    result = figures()
    print(f"{'kind':24} copies accepted caught-for-reason")
    for kind, k in result["hostile"].items():
        print(f"{kind:24} {k['copies']:6} {k['accepted']:8} {k['caught_for_its_reason']:6}")
        for missed in k["missed"]:
            print("    MISSED", missed)
    print(f"hostile: {result['hostile_accepted']} of {result['hostile_total']} accepted")
    print(
        f"benign: {result['benign_accepted']} of {result['benign_total']} accepted {result['benign_status']}"
    )
    for row in result["benign_not_accepted"]:
        print("    NOT ACCEPTED", row)
