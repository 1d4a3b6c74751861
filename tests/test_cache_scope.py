"""What a stage's cache key covers (docs/architecture.md#what-a-key-covers): the code it runs and the settings
it reads, nothing else, so an edit or a knob recomputes only the stages it can change."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from flows.stage_inputs import downstream_of, leaf_paths, stages_keyed_by

SCOPE = runpy.run_path(str(Path(__file__).resolve().parent.parent / "scripts" / "cache_scope.py"))
"""``scripts/cache_scope.py``: the stage task modules and the one-line-edit measurement."""

GROUND = {
    "progress_core",
    "progress_core.errors",
    "progress_core.io",
    "progress_core.base",
    "progress_core.id_sets",
    "progress_core.devices",
    "progress_core.file_lock",
}
MODEL = {f"progress_core.model.{m}" for m in ("config", "prompt", "checkpoint", "loading", "assembly", "square_images")}
ALLOWED: dict[str, set[str]] = {
    "pool": {
        "progress_core.data.config",
        "progress_core.data.synthetic",
        "progress_core.data.scenes",
        "progress_core.data.headroom",
    },
    "manifest": {"progress_core.data.manifest"},
    "features_shard": {
        "progress_core.features.config",
        "progress_core.features.extract",
        "progress_core.features.store",
    },
    "feature_combine": {"progress_core.features.store"},
    "feature_import": {"progress_core.features.importing", "progress_core.features.store"},
    "kmeans": {
        "progress_core.clustering.config",
        "progress_core.clustering.kmeans",
        "progress_core.clustering.store",
        "progress_core.clustering.faiss_gpu",
        "progress_core.features.store",
    },
    "warmup_pools": {
        "progress_core.clustering.config",
        "progress_core.clustering.store",
        "progress_core.clustering.coincide",
        "progress_core.features.store",
    },
    "select": {
        "progress_core.selection.config",
        "progress_core.selection.context",
        "progress_core.selection.allocation",
        "progress_core.selection.strategies",
        "progress_core.selection.oracle",
        "progress_core.selection.rounds",
        "progress_core.probe.accuracy_table",
    },
    "init_model": MODEL
    | {
        "progress_core.model.tiny",
        "progress_core.model.alignment",
        "progress_core.data.captions",
        "progress_core.data.scenes",
    },
    "train": MODEL | {f"progress_core.training.{m}" for m in ("config", "samples", "loop", "launch", "node")},
    "probe": MODEL
    | {f"progress_core.probe.{m}" for m in ("config", "accuracy", "accuracy_table", "judges", "batches", "launched")}
    | {f"progress_core.training.{m}" for m in ("samples", "launch", "node")},
    "export_original": {
        "progress_core.reporting.export",
        "progress_core.data.manifest",
        "progress_core.probe.accuracy_table",
        "progress_core.selection.rounds",
    },
    "holdout": {"progress_core.data.holdout"},
}
ALLOWED["coincide_order"] = ALLOWED["warmup_pools"]
ALLOWED["commit_warmup"] = ALLOWED["select"]
ALLOWED["evaluate"] = ALLOWED["probe"] | {"progress_core.probe.evaluation"}
"""Project modules each stage's code version may cover besides the ground modules and its task module."""


def stage_functions():
    """(allowed-set name, stage spec) of every stage of every task module."""
    scope = {"features (import)": "feature_import"}
    out = []
    for label, spec in SCOPE["stage_specs"]().items():
        name = "feature_combine" if spec.module == "tasks.feature_combine" else scope.get(label, spec.name)
        out.append((name, spec))
    return out


def test_every_stage_is_checked():
    names = {scope for scope, _ in stage_functions()}
    assert names == set(ALLOWED)


@pytest.mark.parametrize("scope,spec", stage_functions(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_stage_key_covers_only_the_code_it_runs(scope, spec):
    own = {spec.module, "tasks", "tasks.stage", "tasks._tables"}
    outside = set(spec.modules) - own - GROUND - ALLOWED[scope]
    assert not outside, f"{scope} ({spec.module}) is keyed by code it does not run: {sorted(outside)}"


def test_the_costly_stages_ignore_data_generation_selection_and_the_probe():
    specs = {scope: set(spec.modules) for scope, spec in stage_functions()}
    for scope in ("train", "init_model"):
        leaked = {m for m in specs[scope] if m.startswith(("progress_core.selection.", "progress_core.probe."))}
        assert not leaked and "progress_core.data.synthetic" not in specs[scope], (scope, leaked)
    core = {m for m in specs["features_shard"] if m.startswith("progress_core.")}
    assert core - GROUND <= {m for m in core if m.startswith("progress_core.features.")}


@pytest.mark.parametrize(
    "path,keyed",
    [
        ("clustering.selection_k", ["kmeans[selection]"]),
        ("clustering.annotation_k", ["kmeans[annotation]"]),
        ("clustering.niter", ["kmeans[annotation]", "kmeans[selection]"]),
        ("features.balanced", ["features"]),
        ("features.batch_size", ["features_shard"]),
        ("shard_size", ["features_shard"]),
        ("warmup.fractions", ["warmup_pools"]),
        ("data.synthetic_n", ["pool"]),
        ("data.allow_duplicate_ids", ["manifest"]),
        ("selection.temperature", ["select"]),
        ("training.learning_rate", ["train"]),
        ("training.data_workers", []),
        ("probe.judge.kind", ["probe"]),
        ("export_original", ["export_original"]),
        ("orchestration.n_workers", []),
        ("orchestration", []),
    ],
)
def test_a_knob_enters_exactly_the_keys_of_the_stages_that_read_it(path, keyed):
    assert stages_keyed_by(path) == keyed


def test_the_coincide_order_reads_the_pruning_settings_not_the_warmup_fractions():
    from flows.stage_inputs import stage_inputs
    from progress_core.run.config import RunConfig

    cfg = RunConfig.model_validate({"selection": {"strategy": "coincide"}})
    assert "coincide_order" in stages_keyed_by("warmup.sigma", cfg)
    assert set(stage_inputs(cfg, 10_000)["coincide_order"]["settings"].model_dump()) == {"temperature", "sigma"}


def test_every_field_is_computed():
    assert [p for p in leaf_paths() if stages_keyed_by(p) is None] == []


def test_downstream_follows_the_outputs():
    assert downstream_of(["kmeans[selection]"])[:2] == ["warmup_pools", "coincide_order"]
    assert "kmeans[annotation]" not in downstream_of(["kmeans[selection]"])
    assert downstream_of(["export_original"]) == []


def test_cli_explain_prints_the_computed_stages(capsys):
    from progress_cli.main import main

    assert main(["config", "--explain", "clustering.selection_k"]) == 0
    out = capsys.readouterr().out
    assert "enters the key of: kmeans[selection]\n" in out
    assert "then, where their outputs change: warmup_pools" in out


def test_a_one_line_edit_rekeys_only_the_stages_of_its_family():
    """The measurement behind docs/architecture.md#what-a-key-covers, on a copy of the source tree."""
    rekeyed = dict(SCOPE["measure"]())
    assert rekeyed["progress_core.selection.strategies"] == ["commit_warmup", "select"]
    assert rekeyed["progress_core.data.synthetic"] == ["pool"]
    assert rekeyed["progress_core.data.manifest"] == ["manifest", "export_original"]
    assert rekeyed["progress_core.training.launch"] == ["train", "probe"], "the probe's ranks start the same way"
    assert rekeyed["progress_core.training.loop"] == ["train"]
    assert rekeyed["progress_core.probe.judges"] == ["probe", "evaluate"]
    assert rekeyed["progress_core.clustering.kmeans"] == ["kmeans"]
    for module in ("progress_core.features.extract", "progress_core.features.config"):
        assert rekeyed[module] == ["features_shard"]
    assert rekeyed["progress_core.run.config"] == [] and rekeyed["progress_core.reporting.report"] == []
