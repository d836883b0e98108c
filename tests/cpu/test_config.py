import datetime as dt

import pytest
from pydantic import ValidationError

from factory.cli import parse_config
from factory.config import DEFAULT_CHANNELS, JobConfig


def test_defaults_run_the_demo():
    c = parse_config([])
    assert c.uses_sample_data and c.output == "./out" and c.run_date == dt.date.today()
    assert c.channels == list(DEFAULT_CHANNELS)
    assert c.run_id == f"{dt.date.today().isoformat()}_all"


def test_flags_win_over_the_config_file(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("output: s3://bucket-a/copy\ncampaign: winter_sale\nchannels: [push, sms]\n"
                 "engine:\n  temperature: 0.9\n  batch_size: 8\n  engine_kwargs: {max_num_seqs: 16}\n")
    c = parse_config(["--config", str(f), "--channels", "sms", "--temperature", "0.2",
                      "--engine-kwargs", '{"swap_space": 1}', "--run-date", "2026-01-31"])
    assert c.output == "s3://bucket-a/copy" and c.campaign == "winter_sale"
    assert c.channels == ["sms"]
    assert c.engine.temperature == 0.2 and c.engine.batch_size == 8
    assert c.engine.engine_kwargs == {"max_num_seqs": 16, "swap_space": 1}
    assert c.run_id == "2026-01-31_winter_sale"


@pytest.mark.parametrize("argv, message", [
    (["--pairs", "p.parquet"], "go together"),
    (["--temperature", "5"], "temperature"),
    (["--replicas", "0"], "replicas"),
    (["--campaign", "bad name!"], "campaign"),
    (["--output", "s3://ab"], "at least 3"),
    (["--channels", ","], "at least one channel"),
])
def test_mistakes_are_named(argv, message):
    with pytest.raises(ValidationError, match=message):
        parse_config(argv)


def test_unknown_config_keys_are_refused(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("outptu: ./x\n")
    with pytest.raises(ValidationError, match="outptu"):
        parse_config(["--config", str(f)])


def test_bad_engine_kwargs_json():
    with pytest.raises(SystemExit):
        parse_config(["--engine-kwargs", "[1, 2]"])


def test_channels_deduplicated_in_order():
    assert JobConfig(channels="sms,push,sms").channels == ["sms", "push"]
