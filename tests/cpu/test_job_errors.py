"""Mistakes stop the job on the driver, before Ray or the engine start."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jobs.nightly_copy as job


def _inputs(tmp_path, sample_dir, pairs: pa.Table):
    pq.write_table(pairs, tmp_path / "pairs.parquet")
    return ["--pairs", str(tmp_path / "pairs.parquet"), "--users", str(sample_dir / "users.parquet"),
            "--products", str(sample_dir / "products.parquet"), "--output", str(tmp_path / "out")]


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not start for a job that cannot run")

    monkeypatch.setattr(ray, "init", refuse)


def test_missing_column_exits_2_naming_file_and_column(tmp_path, sample_dir, capsys):
    argv = _inputs(tmp_path, sample_dir, pa.table({"user_id": ["U000001"], "item": ["P00001"]}))
    assert job.main(argv) == 2
    err = capsys.readouterr().err
    assert "pairs:" in err and "pairs.parquet" in err and "product_id" in err
    assert not (tmp_path / "out").exists()


def test_unknown_channel_exits_2(tmp_path, sample_dir, capsys):
    argv = _inputs(tmp_path, sample_dir, pa.table({"user_id": ["U000001"], "product_id": ["P00001"]}))
    assert job.main(argv + ["--channels", "push,fax"]) == 2
    assert "no template for fax" in capsys.readouterr().err


def test_invalid_setting_exits_2(capsys):
    assert job.main(["--variants", "0"]) == 2
    assert "variants" in capsys.readouterr().err


def test_missing_model_folder_exits_2(tmp_path, sample_dir, capsys):
    argv = _inputs(tmp_path, sample_dir, pa.table({"user_id": ["U000001"], "product_id": ["P00001"]}))
    assert job.main(argv + ["--model", str(tmp_path / "no-such-model")]) == 2
    assert "no such model folder" in capsys.readouterr().err


def test_hub_ids_pass_through_and_paths_must_exist(tmp_path):
    from factory.model import resolve_model

    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model("s3://models/llama/") == "s3://models/llama/"
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError):
        resolve_model("./no/such/folder")
