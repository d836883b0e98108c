"""One source for settings: flags and docs/settings.md are made from the config's fields."""

from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

import pytest
from pydantic import BaseModel, Field

from factory import cli, settings_doc
from factory.config import JobConfig
from factory.errors import JobParser
from factory.flags import FlagSet
from tests.conftest import REPO


def test_docs_settings_md_is_what_the_config_says():
    written = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert written == settings_doc.render(), (
        "docs/settings.md is out of date with factory/config.py: run `make docs` "
        "(python -m factory.settings_doc > docs/settings.md)"
    )


def test_every_field_is_a_flag_or_named_file_only():
    rows = {row[0].strip("`"): row[1] for row in settings_doc.rows(cli.NIGHTLY_FLAGS)}
    flags = {s for a in cli.build_parser()._actions for s in a.option_strings}
    for name in JobConfig.model_fields:
        if name in ("engine", "quality"):
            continue
        assert name in rows, name
        assert rows[name] == "*file only*" or rows[name].strip("`") in flags, (name, rows[name])
    assert rows["engine.cpu_kvcache_gib"] == "`--cpu-kvcache-gib`"
    assert rows["offers"] == "*file only*"


class _Inner(BaseModel):
    depth: int = Field(default=3, ge=1, description="How deep.")


class _Settings(BaseModel):
    """A stand-in for a config that just gained fields: nothing else is edited."""

    when: dt.date = Field(description="A required date.")
    mode: Literal["fast", "slow"] = Field(default="fast", description="Which way.")
    loud: bool = Field(default=False, description="Say more.")
    share: Optional[float] = Field(default=None, description="A share.")
    names: list[str] = Field(default_factory=lambda: ["a", "b"], description="Some names.")
    inner: _Inner = Field(default_factory=_Inner)


def test_a_new_field_is_a_flag_with_its_type_default_and_help():
    parser = JobParser(prog="t")
    FlagSet(_Settings, inline={"inner": None}).add_to(parser)
    args = vars(parser.parse_args(["--when", "2026-01-02", "--mode", "slow", "--loud", "--depth", "5"]))
    assert args == {
        "when": "2026-01-02",  # the model parses dates: a bad one is a setting error naming the flag
        "mode": "slow",
        "loud": True,
        "share": None,
        "names": None,
        "inner.depth": 5,
    }
    help_text = " ".join(parser.format_help().split())
    assert "Some names. (default a,b)" in help_text
    assert "Say more. (default off)" in help_text
    assert "--no-loud" in help_text
    with pytest.raises(SystemExit) as exc:  # required field: required flag
        parser.parse_args(["--mode", "slow"])
    assert exc.value.code == 2


def test_a_field_no_flag_can_carry_is_named_when_the_parser_is_built():
    class Bad(BaseModel):
        pairs: list[tuple[int, int]] = Field(default_factory=list)

    with pytest.raises(TypeError, match=r"Bad.pairs: .*file_only"):
        FlagSet(Bad).add_to(JobParser(prog="t"))


def test_new_flags_reach_the_config():
    config = cli.parse_config(
        ["--cpu-kvcache-gib", "8", "--no-dedup", "--no-force", "--progress-every-seconds", "5"]
    )
    assert (config.engine.cpu_kvcache_gib, config.dedup_prompts, config.force) == (8, False, False)
    assert config.progress_every_seconds == 5.0
