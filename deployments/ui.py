"""``make ui``: a local Prefect server, the ``cpu`` pool, the ``progress-demo`` deployment and a worker.

Open the printed URL, go to Deployments → progress-demo → Run, and watch the rounds and their artifacts.
Ctrl-C stops the worker and the server this command started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from deployments.setup import REPO_ROOT, create_pools, deploy, prefect_server, prefect_worker


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make ui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PROGRESS_UI_PORT", "4200")))
    parser.add_argument(
        "--home",
        default=str(REPO_ROOT / ".prefect"),
        help="PREFECT_HOME of the server (database, results); default ./.prefect",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    print(f"starting prefect server on 127.0.0.1:{args.port} (PREFECT_HOME={home}) ...", flush=True)
    with prefect_server(home, args.port, log=logs / "server.log") as api_url:
        create_pools(api_url, gpus=1, with_gpu_pool=False, home=home)
        deploy(["progress-demo"], api_url, home=home)
        with prefect_worker("cpu", api_url, home=home, log=logs / "worker.log"):
            ui_url = api_url.removesuffix("/api")
            print(
                f"\nPrefect UI: {ui_url}\n"
                f"  trigger a run: {ui_url}/deployments  → progress-demo → Run → Quick run\n"
                f"  logs: {logs}/server.log, {logs}/worker.log\n"
                "Ctrl-C stops the worker and the server.",
                flush=True,
            )
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                print("\nstopping ...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
