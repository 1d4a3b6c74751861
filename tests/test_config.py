"""The run config: presets, YAML, unknown keys and invalid values named, derived trainer/probe configs."""

from __future__ import annotations

import pytest

from progress_cli.main import main
from progress_core.errors import ConfigError
from progress_core.run.config import RunConfig, load_config


def test_presets_fill_defaults_and_explicit_values_win():
    demo = RunConfig()
    assert demo.preset == "demo" and demo.training.model.mode == "tiny" and demo.probe.judge.kind == "exact"
    paper = load_config(overrides={"preset": "paper", "selection": {"selection_num": 5000}})
    assert paper.training.model.mode == "real" and paper.training.global_batch_size == 128
    sized, notes = paper.sized_to_pool(665_298)
    assert sized.clustering.annotation_k == 1000 and sized.clustering.selection_k == 5000
    assert sized.selection.selection_num == 5000, "set explicitly, not scaled"
    assert [n.split(" (")[0] for n in notes] == ["clustering.annotation_k 1000", "clustering.selection_k 5000"]
    assert paper.warmup.fractions == (0.075, 0.09) and paper.probe.samples_per_cluster == 100
    assert paper.probe.judge.kind == "llm" and paper.probe.judge.backend == "lmdeploy"
    assert paper.selection.selection_num == 5000 and paper.selection.temperature == 0.5
    assert paper.final_step(665_298) == 1039


def test_empty_cluster_counts_and_round_budget_scale_with_a_small_pool_unless_set():
    demo = RunConfig()
    same, _ = demo.sized_to_pool(5000)
    assert (same.clustering.annotation_k, same.clustering.selection_k, same.selection.selection_num) == (40, 150, 250)
    small, notes = demo.sized_to_pool(300)
    assert (small.clustering.annotation_k, small.clustering.selection_k, small.selection.selection_num) == (2, 9, 15)
    assert "selection.selection_num 15 (250 per 5,000 rows scaled to 300)" in notes
    fixed, notes = load_config(overrides={"clustering": {"annotation_k": 6}}).sized_to_pool(300)
    assert fixed.clustering.annotation_k == 6 and not any(n.startswith("clustering.annotation_k") for n in notes)
    assert RunConfig().clustering.annotation_k is None, "the run config itself stays as given"


def test_final_step_from_budget_fraction():
    cfg = load_config(overrides={"schedule": {"budget_fraction": 0.2}, "training": {"global_batch_size": 128}})
    assert cfg.final_step(665_298) == 1040  # ceil(0.2 * 665298 / 128)
    assert load_config(overrides={"schedule": {"final_step": 33}}).final_step(10) == 33


def test_derived_configs_share_the_model_and_the_horizon():
    cfg = load_config(overrides={"training": {"model": {"patch_size": 8}}, "seed": 7})
    training = cfg.training_config(123)
    assert training.final_step == 123 and training.model.patch_size == 8
    probe = cfg.probe_config()
    assert probe.model.patch_size == 8 and probe.seed == 7


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"trainng": {}}, "trainng"),
        ({"training": {"modle": {}}}, "training.modle"),
        ({"probe": {"judge": {"kindd": "exact"}}}, "probe.judge.kindd"),
        ({"selection": {"selection_num": 0}}, "selection.selection_num"),
        ({"warmup": {"fractions": [0.3, 0.1]}}, "warmup"),
        ({"preset": "huge"}, "preset"),
    ],
)
def test_bad_fields_are_named(overrides, field):
    with pytest.raises(ConfigError, match=f"'{field}"):
        load_config(overrides=overrides)


def test_yaml_file_and_cli_errors(tmp_path, capsys):
    good = tmp_path / "run.yaml"
    good.write_text("run_dir: /tmp/x\nselection:\n  selection_num: 99\n")
    assert load_config(good).selection.selection_num == 99
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert main(["run", "--set", "selection.temperature=0"]) == 1
    err = capsys.readouterr().err
    assert "config file not found" in err and "selection.temperature" in err
    assert main(["config", "--preset", "paper"]) == 0
    assert "mode: real" in capsys.readouterr().out


def test_paper_presets_fit_a_node_as_they_stand(capsys):
    """global 128 = 16 per GPU x 2 accumulation x 4 GPUs (paper) or 16 x 1 x 8 (paper-8gpu), stage-1 parts."""
    import yaml

    assert main(["config", "--preset", "paper"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    cfg = load_config(overrides=printed)
    t = cfg.training
    assert (t.per_device_batch_size, t.gradient_accumulation_steps, t.nproc_per_node) == (16, 2, 4)
    assert cfg.training_config(1039).micro_batches(t.nproc_per_node) == (16, 2)
    assert t.max_length == 2048 and t.model.language_model == "lmsys/vicuna-7b-v1.5"
    assert t.model.vision_tower == "openai/clip-vit-large-patch14-336" and t.model.vision_feature_layer == -2
    assert t.model.mm_projector == "liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5"
    assert t.deepspeed_config == "zero3.json" and not t.deepspeed_config.startswith("/")
    wide = load_config(overrides={"preset": "paper-8gpu"}).training
    assert (wide.per_device_batch_size, wide.gradient_accumulation_steps, wide.nproc_per_node) == (16, 1, 8)


def test_wrong_batch_product_names_the_three_numbers():
    with pytest.raises(
        ConfigError, match=r"128 != per_device_batch_size 16 x gradient_accumulation_steps 2 x world size 8"
    ):
        load_config(overrides={"preset": "paper", "training": {"nproc_per_node": 8}})


def test_nproc_per_node_maps_from_the_run_config_to_the_trainer():
    cfg = load_config(overrides={"training": {"nproc_per_node": 2, "global_batch_size": 8}})
    assert cfg.training_config(5).nproc_per_node == 2 and cfg.training_config(5).micro_batches(2) == (4, 1)
    assert load_config(overrides={"training": {"nproc_per_node": "auto"}}).training.nproc_per_node == "auto"


def _nested(path: str, value) -> dict:
    out: dict = {}
    node = out
    *heads, last = path.split(".")
    for head in heads:
        node = node.setdefault(head, {})
    node[last] = value
    return out


@pytest.mark.parametrize(
    "path,value",
    [
        ("training.learning_rate", -1),
        ("training.global_batch_size", 0),
        ("training.warmup_ratio", 1.5),
        ("training.nproc_per_node", 0),
        ("training.model.lora_dropout", 1.0),
        ("training.model.patch_size", 0),
        ("probe.samples_per_cluster", 0),
        ("probe.max_new_tokens", 0),
        ("probe.judge.cache_max_entry_count", 0),
        ("data.synthetic_seed", -1),
        ("features.batch_size", 0),
        ("clustering.niter", 0),
        ("warmup.temperature", 0),
        ("selection.selection_num", 0),
        ("schedule.budget_fraction", 0),
        ("orchestration.n_workers", 0),
        ("seed", -5),
        ("shard_size", 0),
    ],
)
def test_a_value_that_makes_no_sense_is_refused_with_its_field(path, value):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=_nested(path, value))
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"invalid config field '{path}':"), lines


def test_a_bad_value_stops_the_cli_before_any_stage(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\ntraining:\n  learning_rate: -1\n")
    assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "training.learning_rate" in err and "greater than 0" in err
    assert not (tmp_path / "run").exists()


def test_auto_probe_size_follows_the_target_error_and_says_what_it_costs():
    cfg = load_config(overrides={"probe": {"samples_per_cluster": "auto"}, "clustering": {"annotation_k": 16}})
    sized, notes = cfg.sized_to_pool(5000)
    assert sized.probe.samples_per_cluster == 50 == cfg.probe_config().samples_per_cluster
    assert notes[-1].startswith("probe.samples_per_cluster 50 (auto: SE of a cluster's probe change <= 0.1")
    assert notes[-1].endswith("up to 50 x 16 clusters = 800 probe answers per round)")
    coarse = load_config(overrides={"probe": {"samples_per_cluster": "auto", "target_se": 0.2}})
    assert coarse.probe_config().samples_per_cluster == 13, "ceil(0.5 / 0.04): SE of the change 0.196 at a = 0.5"
    assert load_config().sized_to_pool(5000)[0].probe.samples_per_cluster == 30, "a number stays as given"
