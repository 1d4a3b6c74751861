"""The flow's thread task runner, which lets go of running stages when the run is interrupted
(docs/architecture.md#orchestration).

Prefect's ``ThreadPoolTaskRunner`` shuts its pool down with ``wait=True`` on every exit, so a Ctrl-C while
feature shards run in its threads would wait for each shard to finish (minutes at 665K rows) before the
command could say anything. A stage's outputs are written atomically and committed by its marker
(docs/architecture.md#stage-contract), so abandoning a half-computed shard loses only that shard, as a kill
would; on an interrupt this runner stops the pool without waiting, and the CLI exits with its one line.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner


class InterruptibleThreadPoolTaskRunner(ThreadPoolTaskRunner):
    """``ThreadPoolTaskRunner`` that does not wait for running tasks when left by an interrupt (its own exit
    then sets the tasks' cancel events and finds no pool left to wait on)."""

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        if interrupted and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)
