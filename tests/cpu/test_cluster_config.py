"""cluster.yaml is a valid Ray cluster launcher config, shaped as docs/running.md says."""

import copy

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import REPO


@pytest.fixture
def cluster():
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_own_schema(cluster):
    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_the_schema_check_is_real(cluster):
    cluster["provider"]["typo_field"] = 1
    cluster["available_node_types"]["gpu_worker"]["min_workers"] = "zero"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(cluster))


def test_gpu_workers_autoscale_from_zero_on_spot_with_an_s3_role(cluster):
    gpu = cluster["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert cluster["idle_timeout_minutes"] > 0
    for node in cluster["available_node_types"].values():
        assert "IamInstanceProfile" in node["node_config"]  # S3 from the role, never from keys
    assert any("[gpu]" in cmd for cmd in cluster["setup_commands"])
    text = (REPO / "cluster.yaml").read_text()
    assert "aws_secret_access_key" not in text.lower() and "AKIA" not in text
