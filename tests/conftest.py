from progress_core.environment import apply_defaults

apply_defaults()

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real ``prefect server start`` on 127.0.0.1 with its own PREFECT_HOME: (api_url, home)."""
    from deployments.setup import prefect_server

    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server(home, log=home / "server.log") as api_url:
        yield api_url, home


RANK_MODULES = {"test_launch", "test_launch_nnodes", "test_partitioned_training", "test_probe_ranks"}
"""Test modules that start multi-rank jobs (torch.distributed.run, gloo)."""


@pytest.fixture(scope="module", autouse=True)
def one_rank_module_at_a_time(request, tmp_path_factory):
    """Under ``make test``'s two workers, the modules that launch ranks run one at a time: two launched jobs at
    once oversubscribe two cores four ranks deep and each picks its master port by asking for a free one, so a
    second job could take the first one's port between its lookup and its bind."""
    if request.module.__name__.rpartition(".")[2] not in RANK_MODULES:
        yield
        return
    import fcntl

    lock = tmp_path_factory.getbasetemp().parent / "rank-modules.lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
