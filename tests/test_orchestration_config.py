"""The orchestration section of the run config and the Dask task runner it builds."""

import pytest

from progress_core.errors import ConfigError
from progress_core.run.config import load_config


def test_dask_runner_from_config():
    from prefect_dask import DaskTaskRunner

    from flows.feature_shards import dask_task_runner

    local = load_config(overrides={"orchestration": {"task_runner": "dask", "n_workers": 3}}).orchestration
    runner = dask_task_runner(local)
    assert isinstance(runner, DaskTaskRunner) and runner.address is None
    assert runner.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1, "processes": True}
    remote = load_config(overrides={"orchestration": {"task_runner": "dask", "address": "tcp://s:8786"}})
    assert dask_task_runner(remote.orchestration).address == "tcp://s:8786"
    assert load_config().orchestration.task_runner == "threads"


def test_unknown_runner_and_keys_are_rejected():
    with pytest.raises(ConfigError, match="orchestration.task_runner"):
        load_config(overrides={"orchestration": {"task_runner": "ray"}})
    with pytest.raises(ConfigError, match="orchestration.workers"):
        load_config(overrides={"orchestration": {"workers": 2}})


def test_import_sources_from_config():
    cfg = load_config(overrides={"features": {"import_image": "a.npy", "import_text": "b.npy"}})
    assert cfg.feature_config().import_sources() == {"image": "a.npy", "text": "b.npy"}
    assert load_config().feature_config().import_sources() == {}
