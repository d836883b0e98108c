import datetime as dt

import pytest

from factory.cli import parse_config
from factory.config import DEFAULT_CHANNELS, JobConfig
from factory.errors import UsageError


def test_defaults_run_the_demo():
    c = parse_config([])
    assert c.uses_sample_data and c.output == "./out" and c.run_date == dt.date.today()
    assert c.channels == list(DEFAULT_CHANNELS)
    assert c.run_id == f"{dt.date.today().isoformat()}_all"


def test_flags_win_over_the_config_file(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text(
        "output: s3://bucket-a/copy\ncampaign: winter_sale\nchannels: [push, sms]\n"
        "engine:\n  temperature: 0.9\n  batch_size: 8\n  engine_kwargs: {max_num_seqs: 16}\n"
    )
    c = parse_config(
        [
            "--config",
            str(f),
            "--channels",
            "sms",
            "--temperature",
            "0.2",
            "--engine-kwargs",
            '{"swap_space": 1}',
            "--run-date",
            "2026-01-31",
        ]
    )
    assert c.output == "s3://bucket-a/copy" and c.campaign == "winter_sale"
    assert c.channels == ["sms"]
    assert c.engine.temperature == 0.2 and c.engine.batch_size == 8
    assert c.engine.engine_kwargs == {"max_num_seqs": 16, "swap_space": 1}
    assert c.run_id == "2026-01-31_winter_sale"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pairs", "p.parquet"], "go together"),
        (["--temperature", "5"], r"^--temperature: 5.0 is out of range: must be at most 2.0$"),
        (["--replicas", "0"], r"^--replicas: 0 is out of range: must be at least 1$"),
        (["--campaign", "bad name!"], r"^--campaign: 'bad name!': use letters"),
        (["--output", "s3://ab"], "^--output: 's3://ab': S3 bucket names have at least 3"),
        (["--channels", ","], "^--channels: at least one channel"),
    ],
)
def test_mistakes_are_named(argv, message):
    with pytest.raises(UsageError, match=message):
        parse_config(argv)


def test_unknown_config_keys_are_refused(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("outptu: ./x\n")
    with pytest.raises(
        UsageError, match=r"job.yaml line 1: outptu: unknown setting 'outptu' \(did you mean 'output'\?\)"
    ):
        parse_config(["--config", str(f)])


def test_bad_engine_kwargs_json():
    with pytest.raises(SystemExit):
        parse_config(["--engine-kwargs", "[1, 2]"])


def test_channels_deduplicated_in_order():
    assert JobConfig(channels="sms,push,sms").channels == ["sms", "push"]


def test_run_label_names_the_run_instead_of_the_campaign():
    c = parse_config(["--campaign", "winter_sale", "--run-label", "winter_fix", "--run-date", "2026-01-31"])
    assert (
        c.campaign == "winter_sale"
        and c.campaign_label == "winter_fix"
        and c.run_id == "2026-01-31_winter_fix"
    )
    assert parse_config(["--campaign", "winter_sale"]).campaign_label == "winter_sale"
    with pytest.raises(UsageError, match="^--run-label: '../escape'"):
        parse_config(["--run-label", "../escape"])


def test_only_users_and_products_take_a_comma_list_or_a_file(tmp_path):
    ids = tmp_path / "users.txt"
    ids.write_text("U000001\n# a comment\n\nU000002  # trailing comment\nU000001\n")
    c = parse_config(["--only-users", f"@{ids}", "--only-products", "P00001, P00002,"])
    assert c.user_ids == ["U000001", "U000002"] and c.product_ids == ["P00001", "P00002"]
    assert parse_config([]).user_ids is None
    with pytest.raises(UsageError, match="^--only-users: cannot read"):
        parse_config(["--only-users", f"@{tmp_path / 'missing.txt'}"])
    with pytest.raises(UsageError, match="^--only-products: the list is empty"):
        parse_config(["--only-products", ","])


def test_locales_are_checked_and_matched():
    from factory.config import locale_allowed

    assert parse_config(["--locales", "en-US,zh_CN,en-US"]).locales == ["en-US", "zh_CN"]
    with pytest.raises(UsageError, match=r"^--locales: 'xx-YY': the templates cannot write language 'xx'"):
        parse_config(["--locales", "en,xx-YY"])
    assert locale_allowed("en-GB", None)
    assert locale_allowed("en-GB", ["en"]) and locale_allowed("en_us", ["en-US"])
    assert not locale_allowed("en-GB", ["en-US"]) and not locale_allowed("zh-CN", ["en"])
    assert not locale_allowed(None, ["en"])


def test_brand_voice_is_one_line_and_capped():
    assert parse_config(["--brand-voice", "warm,\n  cosy"]).brand_voice == "warm, cosy"
    with pytest.raises(UsageError, match="^--brand-voice: too long: at most 200"):
        parse_config(["--brand-voice", "x" * 201])


def test_dry_run_settings():
    c = parse_config(["--dry-run", "--gpu-hour-price", "2.5"])
    assert c.dry_run and c.gpu_hour_price == 2.5 and c.estimate_output_tokens_per_gpu_second == 5777
    with pytest.raises(UsageError, match="^--estimate-output-tokens-per-gpu-second: 0.0 is out of range"):
        parse_config(["--estimate-output-tokens-per-gpu-second", "0"])
