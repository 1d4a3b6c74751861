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


def test_real_flow_never_reports_cached_over_damaged_files(prefect_api, tmp_path, monkeypatch):
    """Through Prefect: after a run killed inside a training stage (``os._exit``) and a truncated assignment,
    the re-run recomputes exactly those two stages, reports every other one ``Cached`` (never a damaged
    one) and gives the uninterrupted selection."""
    import numpy as np
    from flowkit import run_cli, run_to_end, states_by_stage, task_runs, write_config

    from progress_core.id_sets import read_ids

    api_url, home = prefect_api
    cfg = tiny_config(tmp_path / "run").model_dump(mode="json")
    config = write_config(cfg, tmp_path / "run.yaml")
    first = run_to_end(config, api_url, home, tmp_path / "first.log")
    expected = read_ids(first["final_selection"])

    monkeypatch.setenv("PROGRESS_FAULT", "train@1:after_outputs:exit")
    (tmp_path / "run" / "rounds" / "r01" / "train" / ".stage.json").unlink()
    killed = run_cli(config, api_url, home, tmp_path / "killed.log")
    assert killed.wait(timeout=400) != 0
    monkeypatch.delenv("PROGRESS_FAULT")
    assignment = tmp_path / "run" / "clusters" / "annotation" / "annotation_assignment.parquet"
    assignment.write_bytes(assignment.read_bytes()[:100])

    again = run_to_end(config, api_url, home, tmp_path / "again.log")
    runs = task_runs(api_url, again["flow_run_id"])
    kmeans = {r.name: r.state.name for r in runs if r.name.startswith("kmeans")}
    assert kmeans == {"kmeans[annotation]": "Completed", "kmeans[selection]": "Cached"}
    states = states_by_stage(runs)
    assert states["train"][0] == "Cached" and states["train"][1] == "Completed", states["train"]
    assert set(states["train"][2:]) == {"Cached"} and set(states["probe"]) == {"Cached"}
    np.testing.assert_array_equal(read_ids(again["final_selection"]), expected)
