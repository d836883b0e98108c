"""--dry-run: the plan's counts against a hand count from the Parquet files
(plain pandas, none of the factory's code), token and cost arithmetic, and
proof that no engine starts and nothing is written. The counting runs on Ray
Data, as the run's staging does (a local Ray here)."""

import json
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jobs.nightly_copy as job
from factory.cli import parse_job
from factory.dry_run import LOCALE_EXCLUDED, NOTHING_OWED, plan_run
from tests.cpu.test_campaigns import CONFIGS

ALL_CHANNELS = ["push", "email_subject", "ad_headline", "sms", "product_blurb"]
CAP = {
    "push": 40,
    "email_subject": 24,
    "ad_headline": 16,
    "sms": 48,
    "product_blurb": 72,
}  # templates' max_tokens


def _inputs(sample_dir, tmp_path, pairs=None):
    path = sample_dir / "pairs.parquet"
    if pairs is not None:
        path = tmp_path / "pairs.parquet"
        pq.write_table(pairs, path)
    return [
        "--pairs",
        str(path),
        "--users",
        str(sample_dir / "users.parquet"),
        "--products",
        str(sample_dir / "products.parquet"),
        "--output",
        str(tmp_path / "out"),
        "--run-date",
        "2026-11-23",
    ]


def _hand_count(sample_dir, channels, variants=1, locales=None, campaign=None, max_tokens=None):
    """Rows per (campaign, channel) and output-token caps, by hand with pandas."""
    pairs = pd.read_parquet(sample_dir / "pairs.parquet")
    users = pd.read_parquet(sample_dir / "users.parquet")[["user_id", "locale"]]
    if campaign:
        pairs = pairs[pairs.campaign_id == campaign]
    pairs = pairs.merge(users, on="user_id", how="left")
    if locales:
        pairs = pairs[pairs.locale.apply(lambda loc: loc in locales or loc.split("-")[0] in locales)]
    rows = []
    for p in pairs.itertuples():
        wanted = [p.channel] if isinstance(p.channel, str) else channels
        for ch in wanted:
            if ch in channels:
                for v in range(variants):
                    rows.append((p.campaign_id, p.user_id, p.product_id, ch, v, p.locale))
    rows = pd.DataFrame(rows, columns=["campaign", "user", "product", "channel", "variant", "locale"])
    rows = rows.drop_duplicates(["campaign", "user", "product", "channel", "variant"])
    rows["cap"] = [
        max_tokens or CAP[ch] * (2 if loc == "zh-CN" else 1) for ch, loc in zip(rows.channel, rows.locale)
    ]
    return {k: (len(g), int(g.cap.sum())) for k, g in rows.groupby(["campaign", "channel"])}


def _plan_counts(plans):
    return {
        (c["campaign"], ch): (v["rows"], v["output_tokens_max"])
        for p in plans
        for c in p["campaigns"]
        for ch, v in c["channels"].items()
    }


@pytest.fixture(scope="module")
def converted_model():
    from factory.model import ensure_bundled_model

    return ensure_bundled_model()  # a setup step shared with the engine tests (cached)


@pytest.fixture(autouse=True)
def ray_for_the_module(local_ray):
    """The dry runs here join the tests' shared local Ray (tests/conftest.py)."""


@pytest.fixture
def no_engine(monkeypatch, converted_model):
    """No model weights may load and vLLM is never imported (Ray may start: the counting runs on it)."""
    from transformers.modeling_utils import PreTrainedModel

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not load a model")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", refuse)  # every model class loads through it
    had_vllm = "vllm" in sys.modules
    yield
    assert had_vllm or "vllm" not in sys.modules


def test_one_run_of_all_campaigns_matches_a_hand_count(sample_dir, tmp_path, no_engine):
    [config] = parse_job(_inputs(sample_dir, tmp_path) + ["--dry-run", "--no-dedup"]).configs
    plan = plan_run(config)
    expected = _hand_count(sample_dir, ALL_CHANNELS)
    assert _plan_counts([plan]) == expected
    assert plan["total"]["rows"] == sum(r for r, _ in expected.values()) == 400
    pairs = pd.read_parquet(sample_dir / "pairs.parquet")
    assert {
        c["campaign"]: c["pairs"] for c in plan["campaigns"]
    } == pairs.campaign_id.value_counts().to_dict()
    assert all(c["dead_letters"] == {} for c in plan["campaigns"])
    assert not (tmp_path / "out").exists()  # nothing written


def test_campaign_configs_match_a_hand_count(sample_dir, tmp_path, no_engine):
    request = parse_job(
        _inputs(sample_dir, tmp_path) + ["--campaigns-dir", str(CONFIGS), "--dry-run", "--no-dedup"]
    )
    plans = [plan_run(c) for c in request.configs]
    expected = {
        **_hand_count(
            sample_dir,
            ["push", "email_subject", "ad_headline", "sms"],
            locales=["en-US", "en-GB", "zh-CN"],
            campaign="winter_sale",
        ),
        **_hand_count(
            sample_dir,
            ["push", "email_subject", "product_blurb"],
            variants=2,
            locales=["en"],
            campaign="new_arrivals",
            max_tokens=64,
        ),
    }
    assert _plan_counts(plans) == expected
    # What is not generated, and why, by hand.
    pairs = pd.read_parquet(sample_dir / "pairs.parquet").merge(
        pd.read_parquet(sample_dir / "users.parquet")[["user_id", "locale"]], on="user_id"
    )
    new = pairs[pairs.campaign_id == "new_arrivals"]
    zh = (new.locale == "zh-CN").sum()
    skipped_channel = (~new.locale.eq("zh-CN") & new.channel.isin(["ad_headline", "sms"])).sum()
    na = next(c for p in plans for c in p["campaigns"] if c["campaign"] == "new_arrivals")
    assert na["not_generated"] == {LOCALE_EXCLUDED: zh, NOTHING_OWED: skipped_channel} and zh > 0
    assert na["pairs"] == len(new) - zh  # out of the run's scope, like other campaigns' pairs
    assert na["servable_pairs"] == len(new) - zh - skipped_channel
    # winter_sale declares offers: they are in its prompts (and its template versions).
    ws = next(p for p in plans if p["campaign"] == "winter_sale")
    assert [o["kind"] for o in ws["offers"]] == ["discount", "free_shipping"] and ws["competitors"] == 2
    from factory.prompts import load_templates

    push = load_templates()["push"]
    offered = push.with_campaign(ws["brand_voice"], [o["text"] for o in ws["offers"]]).version
    assert ws["template_versions"]["push"] == offered != push.with_campaign(ws["brand_voice"]).version


def test_identical_prompts_count_once_for_the_engine(sample_dir, tmp_path, no_engine):
    users = pd.read_parquet(sample_dir / "users.parquet")
    users = users[users.locale == "en-US"].copy()
    users["key"] = users.interests.apply(lambda v: ", ".join(v))
    twins = users.groupby("key").user_id.apply(list)
    twins = next(ids for ids in twins if len(ids) >= 2)[:2]  # two users whose push prompt shows the same
    twin_key = users.set_index("user_id").key[twins[0]]
    others = (
        users[users.key != twin_key].drop_duplicates("key").user_id.iloc[:2].tolist()
    )  # unlike anyone here
    product = "P00001"
    pairs = pa.table(
        {
            "user_id": twins + others,
            "product_id": [product] * 4,
            "channel": ["push"] * 4,
            "campaign_id": ["spring"] * 4,
        }
    )
    argv = _inputs(sample_dir, tmp_path, pairs) + ["--dry-run", "--channels", "push"]
    [config] = parse_job(argv).configs
    t = plan_run(config)["total"]
    assert (t["rows"], t["engine_rows"], t["output_tokens_max"]) == (4, 3, 3 * CAP["push"])
    [config] = parse_job(argv + ["--no-dedup"]).configs
    t = plan_run(config)["total"]
    assert (t["rows"], t["engine_rows"], t["output_tokens_max"]) == (4, 4, 4 * CAP["push"])


def test_dead_letters_are_counted_with_the_pipelines_reasons(sample_dir, tmp_path, no_engine):
    good = pd.read_parquet(sample_dir / "pairs.parquet").iloc[:3]
    u, p = good.user_id.tolist(), good.product_id.tolist()
    pairs = pa.table(
        {
            "user_id": [u[0], "U_NOBODY", u[1], u[2], u[2], None],
            "product_id": [p[0], p[1], "P_NOTHING", p[2], p[2], p[0]],
            "channel": ["push", None, None, "fax", None, None],
            "campaign_id": ["spring"] * 6,
        }
    )
    [config] = parse_job(_inputs(sample_dir, tmp_path, pairs) + ["--dry-run"]).configs
    [c] = plan_run(config)["campaigns"]
    assert c["campaign"] == "spring" and c["pairs"] == 6 and c["servable_pairs"] == 2
    assert c["dead_letters"] == {
        "unknown_user_id": 1,
        "unknown_product_id": 1,
        "unknown_channel": 1,
        "null_user_id": 1,
    }
    assert {ch: v["rows"] for ch, v in c["channels"].items()} == {
        "push": 2,
        **{ch: 1 for ch in ALL_CHANNELS[1:]},
    }


def test_prompt_tokens_are_the_real_prompts_counted_by_the_models_tokenizer(
    sample_dir, tmp_path, no_engine, converted_model
):
    from transformers import AutoTokenizer

    from factory.facts.extract import catalog_facts
    from factory.prompts import format_price, load_templates

    users = pd.read_parquet(sample_dir / "users.parquet").set_index("user_id")
    products = pd.read_parquet(sample_dir / "products.parquet").set_index("product_id")
    pairs = pd.read_parquet(sample_dir / "pairs.parquet")
    pairs = pairs[pairs.channel.isna()].iloc[:2]
    [config] = parse_job(
        _inputs(sample_dir, tmp_path, pa.Table.from_pandas(pairs, preserve_index=False))
        + ["--dry-run", "--channels", "sms", "--no-dedup"]
    ).configs
    plan = plan_run(config)
    # By hand: each row's chat from the template, through the chat template, tokenized.
    tok = AutoTokenizer.from_pretrained(str(converted_model), local_files_only=True)
    sms = load_templates()["sms"]
    total = 0
    for row in pairs.itertuples():
        user, product = users.loc[row.user_id], products.loc[row.product_id]
        values = {
            "language": user.locale,
            "interests": list(user.interests),
            "title": product.title,
            "brand": product.brand,
            "price": format_price(product.price, product.currency),
            # no facts table: the prompt's {facts} are the catalog's selling points
            "facts": catalog_facts({"selling_points": list(product.selling_points)}),
        }
        text = tok.apply_chat_template(sms.render(values), tokenize=False, add_generation_prompt=True)
        total += len(tok(text, add_special_tokens=False)["input_ids"])
    assert plan["total"]["prompt_tokens"] == total and total > 100


def test_gpu_hours_and_cost_follow_the_assumptions(sample_dir, tmp_path, no_engine):
    argv = _inputs(sample_dir, tmp_path) + [
        "--dry-run",
        "--no-dedup",
        "--gpu-hour-price",
        "2.5",
        "--estimate-output-tokens-per-gpu-second",
        "100",
        "--no-repair",
    ]
    [config] = parse_job(argv).configs
    t = plan_run(config)["total"]
    hand = sum(cap for _, cap in _hand_count(sample_dir, ALL_CHANNELS).values())
    assert t["output_tokens_max"] == hand
    assert t["gpu_hours"] == pytest.approx(hand / 100 / 3600)
    assert t["cost_usd"] == pytest.approx(hand / 100 / 3600 * 2.5)
    assert t["gpu_hours_with_repair_max"] == t["gpu_hours"]  # no repair pass
    [config] = parse_job(argv[:-1]).configs
    assert plan_run(config)["total"]["gpu_hours_with_repair_max"] == pytest.approx(2 * t["gpu_hours"])
    # --candidates 3: three draws a row, each up to its cap; as many rows owed.
    [config] = parse_job(argv + ["--candidates", "3"]).configs
    drawn = plan_run(config)["total"]
    assert (drawn["rows"], drawn["output_tokens_max"]) == (t["rows"], 3 * hand)
    assert drawn["engine_rows"] == 3 * t["engine_rows"] and drawn["gpu_hours"] == pytest.approx(
        3 * t["gpu_hours"]
    )


@pytest.mark.slow  # the whole job's dry run (test_job_errors runs one too): make test, not test-fast
def test_job_prints_the_plan_and_exits_0(sample_dir, tmp_path, capsys, no_engine):
    argv = _inputs(sample_dir, tmp_path) + ["--campaigns-dir", str(CONFIGS), "--dry-run"]
    assert job.main(argv + ["--json"]) == 0
    plans = json.loads(capsys.readouterr().out)
    assert [p["run_id"] for p in plans] == ["2026-11-23_new_arrivals", "2026-11-23_winter_sale"]
    assert job.main(argv) == 0
    out = capsys.readouterr().out
    assert "Dry run 2026-11-23_winter_sale: no engine started, nothing written" in out
    assert "GPU-hours" in out and "winter_sale     push" in out
    assert not (tmp_path / "out").exists()


def test_dry_run_still_stops_on_input_errors(sample_dir, tmp_path, capsys, no_engine):
    argv = _inputs(sample_dir, tmp_path, pa.table({"user_id": ["U1"], "item": ["P1"]})) + ["--dry-run"]
    assert job.main(argv) == 2
    assert "product_id" in capsys.readouterr().err


def test_counts_add_up_over_product_buckets_and_tokens_come_from_a_sample(
    sample_dir, tmp_path, monkeypatch, no_engine
):
    """At scale the tally runs per product bucket on Ray, and prompt tokens are
    a sample scaled up: here 4 buckets of the sample data and 5 rows a
    channel must give the hand count's rows exactly and prompt tokens within
    10 % of rendering every row."""
    from factory.pipeline import staging
    from factory.pipeline.plan import prepare

    [config] = parse_job(_inputs(sample_dir, tmp_path) + ["--dry-run", "--no-dedup"]).configs
    exact = plan_run(config)  # one bucket, every row rendered (fewer than SAMPLE_ROWS per channel)
    assert all(
        v["rows_tokenized"] == v["engine_rows"] for c in exact["campaigns"] for v in c["channels"].values()
    )
    monkeypatch.setattr(staging, "STAGE_BUCKET_PAIRS", 30)  # 104 pairs: 4 buckets
    assert staging.stage_buckets(prepare(config)) == 4
    sampled = plan_run(config, sample_rows=5)
    assert _plan_counts([sampled]) == _plan_counts([exact]) == _hand_count(sample_dir, ALL_CHANNELS)
    assert {c["campaign"]: (c["pairs"], c["servable_pairs"]) for c in sampled["campaigns"]} == {
        c["campaign"]: (c["pairs"], c["servable_pairs"]) for c in exact["campaigns"]
    }
    for c in sampled["campaigns"]:
        for v in c["channels"].values():
            assert v["rows_tokenized"] == min(5, v["engine_rows"])
    assert sampled["total"]["prompt_tokens"] == pytest.approx(exact["total"]["prompt_tokens"], rel=0.10)
    assert sampled["total"]["prompt_tokens"] != exact["total"]["prompt_tokens"]  # it was a sample
    assert plan_run(config, sample_rows=5) == sampled  # the same sample on every rerun


def test_an_experiment_plan_counts_no_copy_for_the_holdout_and_pins_nothing(
    sample_dir, tmp_path, no_engine, capsys
):
    from factory.experiments.assign import HOLDOUT, Assigner, Layout

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "winter_sale.yaml").write_text(
        "campaign_id: winter_sale\nchannels: [push, sms]\nexperiment:\n  experiment_id: voice_1\n  holdout: "
        "0.3\n"
        "  arms:\n    - {name: cosy, brand_voice: warm and cosy}\n    - "
        "{name: crisp, brand_voice: short and crisp}\n"
    )
    request = parse_job(
        _inputs(sample_dir, tmp_path) + ["--campaigns-dir", str(folder), "--dry-run", "--no-dedup"]
    )
    [plan] = [plan_run(c) for c in request.configs]
    e = plan["experiment"]
    assert (
        e["method"] == "declared" and e["shares"] == {"cosy": 0.5, "crisp": 0.5} and e["source"] == "computed"
    )
    # By hand: the users the hash puts in the holdout owe no copy; the others' rows are the plan's rows.
    assign = Assigner("voice_1", 0.3, Layout.contiguous({"cosy": 0.5, "crisp": 0.5}))
    pairs = pd.read_parquet(sample_dir / "pairs.parquet")
    pairs = pairs[pairs.campaign_id == "winter_sale"]
    rows = {
        (p.user_id, p.product_id, ch)
        for p in pairs.itertuples()
        for ch in ([p.channel] if isinstance(p.channel, str) else ["push", "sms"])
        if ch in ("push", "sms")
    }
    held = {r for r in rows if assign.arm_of(r[0]) == HOLDOUT}
    assert 0 < len(held) < len(rows)
    assert e["holdout_rows"] == len(held) and plan["total"]["rows"] == len(rows) - len(held)
    assert e["rows_by_arm"] == {
        arm: len([r for r in rows if assign.arm_of(r[0]) == arm]) for arm in ("cosy", "crisp")
    }
    assert not (tmp_path / "out").exists()  # nothing pinned, nothing written
    assert job.main(_inputs(sample_dir, tmp_path) + ["--campaigns-dir", str(folder), "--dry-run"]) == 0
    assert "experiment voice_1: declared allocation" in capsys.readouterr().out
