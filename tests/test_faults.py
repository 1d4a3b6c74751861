"""Fault injection: kill a stage half-way, damage each kind of output, remove a marker, change an image or a
config field; the re-run must give the uninterrupted run's selection, recompute only what it must, and
never reuse a damaged file (docs/architecture.md#stage-contract)."""

from __future__ import annotations

import pytest
from faultkit import DAMAGES, STAGES, change_config, change_image, inject, run_chain, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("faults") / "run")
    return cfg, run_chain(cfg)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("how", DAMAGES)
def test_fault_is_recovered_or_loud(baseline, stage, how):
    cfg, records = baseline
    result = inject(cfg, records, stage, how)
    assert result["outcome"] in ("recovered", "failed loudly"), result


def test_changed_image_recomputes_features(baseline):
    cfg, records = baseline
    assert change_image(cfg, records)["outcome"] == "recovered"


def test_changed_config_recomputes_only_downstream(baseline):
    cfg, records = baseline
    assert change_config(cfg, records)["outcome"] == "recovered"
