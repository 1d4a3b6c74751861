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
