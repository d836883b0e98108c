"""Campaign configs: the shipped ones load, and every kind of mistake is named
with its file and setting, all of a file's mistakes at once, before any run."""

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest

import jobs.nightly_copy as job
from factory.campaigns import CampaignError, load_campaigns, merge_values, select
from factory.cli import parse_job
from factory.prompts import load_templates
from factory.quality.policy import DEFAULT_LIMITS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TEMPLATES = load_templates()
GOOD = """\
campaign_id: {id}
channels: [push, sms]
"""


def _folder(tmp_path, **files: str) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _problems(folder) -> list[str]:
    with pytest.raises(CampaignError) as caught:
        load_campaigns(folder, TEMPLATES)
    return caught.value.problems


def test_shipped_configs_load_and_apply():
    campaigns = load_campaigns(CONFIGS, TEMPLATES)
    assert sorted(campaigns) == ["new_arrivals", "winter_sale"]
    winter = campaigns["winter_sale"].config
    assert winter.channels == ["push", "email_subject", "ad_headline", "sms"]
    assert winter.locales == ["en-US", "en-GB", "zh-CN"] and winter.brand_voice
    request = parse_job(["--campaigns-dir", str(CONFIGS), "--run-date", "2026-11-23"])
    by_id = {c.campaign: c for c in request.configs}
    assert sorted(by_id) == ["new_arrivals", "winter_sale"]
    c = by_id["winter_sale"]
    assert c.run_id == "2026-11-23_winter_sale" and c.engine.temperature == 0.4
    assert c.quality.limits["push"].max == 90 and "doorbuster" in c.quality.banned_terms
    n = by_id["new_arrivals"]
    assert n.variants == 2 and n.engine.max_tokens == 64 and n.locales == ["en"]
    assert n.quality.severity_of("foreign_brand") == "reject" and n.quality.limits["email_subject"].max == 50


@pytest.mark.parametrize(
    "day, active",
    [
        ("2026-09-30", []),
        ("2026-10-01", ["new_arrivals"]),
        ("2026-11-15", ["new_arrivals", "winter_sale"]),
        ("2027-02-28", ["new_arrivals", "winter_sale"]),
        ("2027-03-01", ["new_arrivals"]),
    ],
)
def test_runs_campaigns_active_on_the_run_date(day, active):
    request = parse_job(["--campaigns-dir", str(CONFIGS), "--run-date", day])
    assert [c.campaign for c in request.configs] == active


@pytest.mark.parametrize(
    "body, where, message",
    [
        ("campaign_id: 'bad id!'\nchannels: [push]\n", "campaign_id", "use letters, digits"),
        ("campaign_id: other\nchannels: [push]\n", "campaign_id", "must equal the file's name 'spring'"),
        ("campaign_id: spring\nchannels: [push, fax]\n", "channels", "no template for 'fax'"),
        ("campaign_id: spring\nchannels: []\n", "channels", "at least one channel"),
        ("campaign_id: spring\n", "channels", "required, but missing"),
        (
            "campaign_id: spring\nchannels: [push]\ntone: playful\n",
            "tone",
            "unknown setting 'tone' (did you mean 'brand_voice'?)",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nbrand_voice: '" + "x" * 201 + "'\n",
            "brand_voice",
            "at most 200",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nlocales: [en-US, xx-YY]\n",
            "locales.1",
            "cannot write language 'xx'",
        ),
        ("campaign_id: spring\nchannels: [push]\nlocales: [english]\n", "locales.0", "is not a locale"),
        (
            "campaign_id: spring\nchannels: [push]\nstart: 2026-03-01\nend: 2026-02-01\n",
            "end",
            "before start",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nstart: tomorrow\n",
            "start",
            "'tomorrow' is not a date (YYYY-MM-DD)",
        ),
        ("campaign_id: spring\nchannels: [push]\nactive: maybe\n", "active", "'maybe' is not true or false"),
        (
            "campaign_id: spring\nchannels: [push]\nvariants: 11\n",
            "variants",
            "11 is out of range: must be at most 10",
        ),
        (
            "campaign_id: spring\nchannels: [push]\ncandidates: 17\n",
            "candidates",
            "17 is out of range: must be at most 16",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nsampling: {temperature: 3}\n",
            "sampling.temperature",
            "must be at most 2",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nsampling: {top_p: 0}\n",
            "sampling.top_p",
            "must be more than 0",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nsampling: {max_tokens: 0}\n",
            "sampling.max_tokens",
            "must be at least 1",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nsampling: {temprature: 1}\n",
            "sampling.temprature",
            "did you mean 'temperature'?",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nquality: {limits: {fax: {max: 5}}}\n",
            "quality",
            "no template: 'fax'",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nquality: {limits: {push: {max: 0}}}\n",
            "quality.limits.push.max",
            "must be more than 0",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nquality: {severity: {shouting: 'off'}}\n",
            "quality.severity",
            "unknown reason code",
        ),
        (
            "campaign_id: spring\nchannels: [push]\nquality: {severity: {foreign_brand: off}}\n",
            "quality.severity.foreign_brand",
            'write "off"',
        ),
        (
            "campaign_id: spring\nchannels: [push]\nquality: {banned_terms: cheap}\n",
            "quality.banned_terms",
            "'cheap' is not a list",
        ),
    ],
)
def test_each_kind_of_mistake_names_file_setting_and_problem(tmp_path, body, where, message):
    folder = _folder(tmp_path, **{"spring.yaml": body})
    problems = _problems(folder)
    assert len(problems) == 1, problems
    # The file, the line of the setting (or of its nearest parent) when the file writes it, the setting.
    assert re.match(
        rf"{re.escape(str(folder / 'spring.yaml'))}( line \d+)?: {re.escape(where)}: ", problems[0]
    ), problems
    assert message in problems[0], problems[0]


def test_brand_voice_needs_the_placeholder_in_the_campaigns_templates(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(Path(load_templates()["push"].source).parent, templates)
    (templates / "sms.yaml").write_text((templates / "sms.yaml").read_text().replace("  {brand_voice}\n", ""))
    folder = _folder(tmp_path, **{"spring.yaml": GOOD.format(id="spring") + "brand_voice: calm\n"})
    with pytest.raises(
        CampaignError, match=r"spring.yaml line 3: brand_voice: the template\(s\) of sms have no "
    ):
        load_campaigns(folder, load_templates(templates))


def test_every_mistake_of_a_file_is_reported_at_once(tmp_path):
    folder = _folder(
        tmp_path,
        **{
            "spring.yaml": "campaign_id: autumn\nchannels: [fax]\nvariants: 0\n"
            "sampling: {temperature: -1}\nlocales: [xx]\ncolour: red\n"
        },
    )
    problems = _problems(folder)
    wheres = sorted(p.split(": ")[1] for p in problems)
    assert wheres == ["campaign_id", "channels", "colour", "locales.0", "sampling.temperature", "variants"]


def test_folder_mistakes(tmp_path):
    assert "no such folder" in _problems(tmp_path / "missing")[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("not a campaign")
    assert "no campaign files" in _problems(empty)[0]
    folder = _folder(
        tmp_path,
        **{
            "a.yaml": GOOD.format(id="a"),
            "a.yml": GOOD.format(id="a"),
            "b.yaml": "campaign_id: b\nchannels: [push\nvariants: 2\n",
            "c.yaml": "- just\n- a list\n",
            "d.yaml": GOOD.format(id="d") + "variants: 0\n",
        },
    )
    problems = _problems(folder)
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert f"{folder / 'a.yml'}: campaign_id 'a' is also defined in {folder / 'a.yaml'}" in text
    assert f"{folder / 'b.yaml'} line 3, column" in text and "not valid YAML" in text
    assert f"{folder / 'c.yaml'}: a campaign file is a mapping" in text
    assert f"{folder / 'd.yaml'} line 3: variants:" in text


def test_named_campaigns_must_exist_and_be_active(tmp_path):
    folder = _folder(
        tmp_path,
        **{
            "spring.yaml": GOOD.format(id="spring"),
            "summer.yaml": GOOD.format(id="summer") + "start: 2026-06-01\n",
            "paused.yaml": GOOD.format(id="paused") + "active: false\n",
        },
    )
    campaigns = load_campaigns(folder, TEMPLATES)
    day = dt.date(2026, 5, 1)
    assert [c.id for c in select(campaigns, [], day)] == ["spring"]
    assert [c.id for c in select(campaigns, ["spring"], day)] == ["spring"]
    with pytest.raises(CampaignError) as caught:
        select(campaigns, ["sprng", "summer", "paused"], day)
    text = "\n".join(caught.value.problems)
    assert "--campaign sprng: no such campaign in the campaigns folder (did you mean spring?)" in text
    assert "'summer' is not active on 2026-05-01 (starts 2026-06-01)" in text
    assert "'paused' is not active on 2026-05-01 (active: false)" in text


def test_precedence_defaults_config_file_campaign_flags(tmp_path):
    folder = _folder(
        tmp_path,
        **{
            "spring.yaml": GOOD.format(id="spring")
            + (
                "variants: 2\ncandidates: 4\nsampling: {temperature: 0.7}\nbrand_voice: calm\n"
                "quality:\n  banned_terms: [doorbuster]\n  limits: {sms: {max: 2}}\n  repair: false\n"
            )
        },
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "engine: {temperature: 0.9, batch_size: 8}\n"
        "quality:\n  banned_terms: [cheap]\n  limits: {push: {max: 80}}\n"
    )
    [c] = parse_job(
        ["--config", str(job_file), "--campaigns-dir", str(folder), "--run-date", "2026-05-01"]
    ).configs
    assert (
        c.campaign == "spring"
        and c.channels == ["push", "sms"]
        and c.variants == 2
        and c.candidates == 4  # a campaign may draw more than the job's default
        and c.brand_voice == "calm"
    )
    assert c.engine.temperature == 0.7 and c.engine.batch_size == 8  # campaign over file, file kept otherwise
    assert c.quality.banned_terms == ["cheap", "doorbuster"]  # term lists add up
    assert c.quality.limits["push"].max == 80 and c.quality.limits["sms"].max == 2
    assert c.quality.limits["ad_headline"].max == DEFAULT_LIMITS["ad_headline"]["max"]
    assert c.quality.repair is False
    [c] = parse_job(
        [
            "--config",
            str(job_file),
            "--campaigns-dir",
            str(folder),
            "--run-date",
            "2026-05-01",
            "--channels",
            "sms",
            "--temperature",
            "0.2",
            "--repair",
        ]
    ).configs
    assert c.channels == ["sms"] and c.engine.temperature == 0.2 and c.quality.repair is True


def test_merge_values_adds_terms_and_merges_mappings():
    base = {"quality": {"banned_terms": ["a"], "limits": {"push": {"max": 80}}}, "variants": 1}
    over = {"quality": {"banned_terms": ["b", "a"], "limits": {"push": {"min": 5}}}, "variants": 3}
    assert merge_values(base, over) == {
        "quality": {"banned_terms": ["a", "b"], "limits": {"push": {"max": 80, "min": 5}}},
        "variants": 3,
    }
    assert base["quality"]["banned_terms"] == ["a"]  # not mutated


def test_several_campaigns_without_a_folder_and_run_labels(tmp_path):
    request = parse_job(["--campaign", "winter_sale,new_arrivals", "--campaign", "winter_sale"])
    assert [c.campaign for c in request.configs] == ["winter_sale", "new_arrivals"]
    with pytest.raises(CampaignError, match="one label cannot name 2 runs"):
        parse_job(["--campaign", "a,b", "--run-label", "backfill"])
    with pytest.raises(CampaignError, match="one label cannot name 2 runs"):
        parse_job(["--campaigns-dir", str(CONFIGS), "--run-date", "2026-11-23", "--run-label", "backfill"])
    [c] = parse_job(
        [
            "--campaigns-dir",
            str(CONFIGS),
            "--campaign",
            "winter_sale",
            "--run-date",
            "2026-11-23",
            "--run-label",
            "winter_fix",
        ]
    ).configs
    assert c.campaign == "winter_sale" and c.run_id == "2026-11-23_winter_fix"


@pytest.fixture
def no_ray(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not start for a job that cannot run")

    monkeypatch.setattr(ray, "init", refuse)


def test_a_bad_campaign_file_stops_the_job_before_any_run(tmp_path, capsys, no_ray, monkeypatch):
    folder = _folder(
        tmp_path,
        **{
            "spring.yaml": GOOD.format(id="spring"),
            "summer.yaml": "campaign_id: summer\nchannels: [fax]\nvariants: 0\n",
        },
    )
    monkeypatch.setattr(job, "run", lambda config: pytest.fail("no run may start"))
    assert job.main(["--campaigns-dir", str(folder), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "summer.yaml line 2: channels: no template for 'fax'" in err
    assert "summer.yaml line 3: variants: 0 is out of range: must be at least 1" in err
    assert not (tmp_path / "out").exists()


def test_runs_one_after_another_and_exits_with_the_first_failure(tmp_path, capsys, monkeypatch):
    from factory.pipeline import RunResult

    folder = _folder(tmp_path, **{f"{n}.yaml": GOOD.format(id=n) for n in ("alpha", "beta", "gamma")})
    seen = []

    def fake_run(config):
        seen.append(config.campaign)
        if config.campaign == "beta":
            raise RuntimeError("engine died")
        return RunResult(
            run_id=config.run_id,
            attempt=1,
            action="new",
            output_uri="o",
            manifest_uri="m",
            rows_written=7,
            dead_letters=0,
            rows_by_channel={"push": 7},
            dead_letters_by_reason={},
            samples=[],
            seconds=1.0,
        )

    monkeypatch.setattr(job, "run", fake_run)
    assert job.main(["--campaigns-dir", str(folder), "--run-date", "2026-05-01"]) == 1
    assert seen == ["alpha", "beta", "gamma"]  # a failure does not stop the others
    out = capsys.readouterr().out
    lines = out[out.index("Campaigns:") :].splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["alpha", "beta", "gamma"]
    assert "published" in lines[0] and "FAILED (exit 1): engine died" in lines[1]


def test_no_active_campaign_is_not_an_error(tmp_path, capsys, monkeypatch):
    folder = _folder(tmp_path, **{"spring.yaml": GOOD.format(id="spring") + "active: false\n"})
    monkeypatch.setattr(job, "run", lambda config: pytest.fail("no run may start"))
    assert job.main(["--campaigns-dir", str(folder)]) == 0
    assert "No campaign is active" in capsys.readouterr().out


def test_offers_and_competitors_from_the_campaign_file(tmp_path):
    folder = _folder(
        tmp_path,
        **{
            "spring.yaml": GOOD.format(id="spring")
            + (
                "offers:\n  - {kind: discount, text: '20% off knitwear with code WARM20'}\n"
                "competitors: [Frostline, ' Polar  Peak ']\n"
            )
        },
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text("competitors: [Acme Outdoor]\noffers:\n  - {kind: gift, text: a free tote bag}\n")
    [c] = parse_job(
        ["--config", str(job_file), "--campaigns-dir", str(folder), "--run-date", "2026-05-01"]
    ).configs
    assert [(o.kind, o.text) for o in c.offers] == [
        ("discount", "20% off knitwear with code WARM20")
    ]  # replaced
    assert c.competitors == ["Acme Outdoor", "Frostline", "Polar Peak"]  # added to the job's


def test_offers_are_checked_and_need_the_placeholder(tmp_path):
    folder = _folder(
        tmp_path,
        **{"spring.yaml": GOOD.format(id="spring") + ("offers:\n  - {kind: coupon, text: 20% off}\n")},
    )
    assert any("offers" in p and "discount" in p for p in _problems(folder))
    templates = tmp_path / "templates"
    shutil.copytree(Path(load_templates.__globals__["BUILTIN_TEMPLATE_DIR"]), templates)
    (templates / "sms.yaml").write_text((templates / "sms.yaml").read_text().replace("  {offers}\n", ""))
    folder = _folder(
        tmp_path,
        **{"spring.yaml": GOOD.format(id="spring") + ("offers:\n  - {kind: discount, text: 20% off}\n")},
    )
    with pytest.raises(
        CampaignError, match=r"offers: the template\(s\) of sms have no \{offers\} placeholder"
    ):
        load_campaigns(folder, load_templates(templates))
