"""Export a run to the original scripts' files (docs/architecture.md#file-kinds), so users of those scripts can switch over."""

from __future__ import annotations

from prefect import task

from progress_core.id_sets import read_ids
from progress_core.probe.accuracy_table import read_accuracy_table
from progress_core.reporting.export import RoundExport, export_original
from tasks.stage import StageRecord, stage, stage_cache_key


@task(name="export-original", task_run_name="export-original", cache_key_fn=stage_cache_key, persist_result=True)
@stage("export_original")
def export_stage(
    manifest: StageRecord,
    annotation: StageRecord,
    pools: StageRecord,
    rounds: list[StageRecord],
    probes: list[StageRecord],
    steps: list[int],
    selection_num: int,
    out_dir: str,
    remaining: str = "every_round",
) -> StageRecord:
    """``Top_50K.json`` … ``Selected_until_{step}.json``, ``step_list.txt`` and the judge JSON per stop.

    Every exported file is an output of the record, so the marker verifies each one and a damaged file is
    rewritten rather than reused (docs/architecture.md#stage-contract). ``remaining="last"`` writes only the last
    remaining-pool file (``export_remaining`` in the run config).
    """
    exports = [
        RoundExport(
            step=r.meta["step"],
            new_ids=read_ids(r.files["new"]),
            selected_until=read_ids(r.files["selected_until"]),
            remaining_after=read_ids(r.files["remaining_after"]),
            num=selection_num,
            probabilities={int(k): v for k, v in r.meta.get("probabilities", {}).items()},
        )
        for r in rounds
        if r.stage == "select"
    ]
    tables = {int(p.meta["step"]): read_accuracy_table(p.files["per_cluster"]) for p in probes}
    counts = export_original(
        out_dir,
        manifest.files["manifest"],
        annotation.files["assignment"],
        read_ids(pools.files["w1"]),
        read_ids(pools.files["w2"]),
        exports,
        step_list=steps,
        accuracy_tables=tables,
        remaining=remaining,
    )
    files = {name: f"{out_dir}/{name}" for name in counts}
    files.update(step_list=f"{out_dir}/step_list.txt", summary=f"{out_dir}/export_summary.json")
    return StageRecord(stage="export_original", out_dir=out_dir, files=files, rows=dict(counts))
