import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real ``prefect server start`` on 127.0.0.1 with its own PREFECT_HOME: (api_url, home)."""
    from deployments.setup import prefect_server

    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server(home, log=home / "server.log") as api_url:
        yield api_url, home
