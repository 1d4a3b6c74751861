"""What a finished run reports: the typed run summary in ``summary.json``
(``docs/architecture.md#a-round-through-the-files``).

One :class:`RoundSummary` per round (warm-up rounds included) with the steps it trained, the samples it
selected against its budget, the probe accuracy after it and the seconds each stage took, and one
:class:`RunSummary` for the run. Seconds are wall-clock seconds of this run (a cached stage costs ~0 s);
on GPU workers they are GPU-seconds of the stage's one device.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from progress_core.io import atomic_path


class RoundSummary(BaseModel):
    """One round of a run (PROGRESS §3.4)."""

    model_config = ConfigDict(extra="forbid")

    round: int
    strategy: str | None = None
    from_step: int
    to_step: int
    budget: int = Field(description="Samples the schedule gave the round.")
    new: int = Field(description="Samples selected (and trained) in the round.")
    selected: int = Field(description="Samples selected so far, warm-up included.")
    remaining: int
    probe_n: int = 0
    probe_accuracy: float | None = Field(None, description="Probe accuracy after the round; None when not probed.")
    seconds: float = Field(0.0, description="Wall-clock seconds of the whole round.")
    stage_seconds: dict[str, float] = Field(default_factory=dict, description="Seconds per stage (select/train/probe).")
    quota_mode: str = Field("", description="redistribute (default) or original (capped quota dropped).")
    notes: list[str] = Field(default_factory=list)
    dir: str = ""


class RunSummary(BaseModel):
    """A whole run: where its files are and what each round did."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str
    flow_run_id: str | None = None
    strategy: str
    seed: int
    final_step: int = Field(description="The training schedule's horizon (last planned step).")
    step: int = Field(description="The step the run reached.")
    n_samples: int
    n_selected: int = 0
    rounds: list[RoundSummary] = Field(default_factory=list)
    stage_seconds: dict[str, float] = Field(default_factory=dict, description="Seconds per stage over the run.")
    final_selection: str | None = None
    export_dir: str | None = None
    final_checkpoint: str | None = None
    final_checkpoint_key: str | None = None
    concept_report: str | None = None
    concept_summary: str | None = None
    report_html: str | None = None
    eval_json: str | None = None
    labels: str | None = None
    image_root: str | None = None
    skipped: dict[str, int] = Field(default_factory=dict, description="Rows left out of the run, by reason.")
    run_manifest: str | None = Field(None, description="run_manifest.json: every current output and its key.")
    stale_moved: int = Field(0, description="Files of an older schedule moved to stale/ by this run.")
    stale_dir: str | None = None

    def write(self, path: str | Path) -> Path:
        """``summary.json`` (atomic)."""
        out = Path(path)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2))
        return out


def format_accuracy(value: float | None, spec: str = ".3f") -> str:
    """An accuracy as shown to people: "–" for a round that was not probed (or had no judged answer)."""
    return "–" if value is None or value != value else format(value, spec)


def total_seconds(rounds: list[RoundSummary], extra: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds per stage summed over ``rounds`` plus ``extra`` (the stages before the rounds)."""
    out: dict[str, float] = dict(extra or {})
    for r in rounds:
        for stage, s in r.stage_seconds.items():
            out[stage] = round(out.get(stage, 0.0) + s, 3)
    return out
