"""``progress train`` (continue the run to a step, SPEC §3.1) and ``progress probe`` (per-cluster accuracy,
SPEC §3.2), run by hand as the original's Selection_1 / Selection_2+3 scripts are."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer

from progress_core.errors import ConfigError, ProgressError


class TrainInputError(ProgressError):
    """A train/probe command got a missing file or inconsistent inputs."""


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise TrainInputError(f"{what} not found: {path}")
    return path


def _read_ids(path: Path, what: str):
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(_need(path, what))
    if "sample_id" not in table.column_names:
        raise TrainInputError(f"{what} {path} has no sample_id column")
    ids = table.column("sample_id").to_numpy(zero_copy_only=False)
    if len(ids) and (np.isnan(ids.astype(float)).any()):
        raise TrainInputError(f"{what} {path} has null sample ids")
    return ids.astype(np.int64), table


def _manifest_rows(manifest: Path, ids):
    """Manifest rows of ``ids`` in the given order (sample_id is dense 0..N-1, BRIEF manifest contract)."""
    import numpy as np

    from progress_core.manifest import read_manifest

    table = read_manifest(_need(manifest, "manifest"), columns=["sample_id", "image", "conversations"])
    n = table.num_rows
    bad = np.flatnonzero((ids < 0) | (ids >= n))
    if bad.size:
        raise TrainInputError(f"sample_id {int(ids[bad[0]])} (row {int(bad[0])}) is not in the manifest of {n} rows")
    order = table.column("sample_id").to_numpy()
    if not np.array_equal(order, np.arange(n)):
        raise TrainInputError(f"manifest {manifest} sample_id is not dense 0..{n - 1} in order")
    return table.take(ids)


def _nproc(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"--nproc-per-node must be a positive integer or 'auto', got {value!r}")
    return int(value)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``probe`` to the progress app."""

    @app.command("train")
    def train(
        samples: Path = typer.Option(
            ..., "--samples", help="Parquet with a sample_id column: this piece's data, in order"
        ),
        manifest: Path = typer.Option(..., "--manifest", help="manifest Parquet the sample ids index"),
        images: Optional[Path] = typer.Option(None, "--images", help="image root the manifest's paths are relative to"),
        to_step: int = typer.Option(..., "--to-step", min=0, help="train until this global step"),
        out: Path = typer.Option(..., "--out", help="checkpoint directory to write (HF model dir + training state)"),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="continue this checkpoint"),
        init: bool = typer.Option(
            False, "--init", help="start a new run (tiny: build the model from the manifest's text)"
        ),
        final_step: Optional[int] = typer.Option(
            None, "--final-step", min=1, help="schedule horizon (whole planned run); default: the checkpoint's"
        ),
        mode: str = typer.Option("tiny", help="tiny | real"),
        base_model: str = typer.Option("llava-hf/llava-1.5-7b-hf", help="real mode: LLaVA name or local path"),
        language_model: Optional[str] = typer.Option(
            None, "--language-model", help="real mode: assemble from this LLM (paper: lmsys/vicuna-7b-v1.5)"
        ),
        vision_tower: Optional[str] = typer.Option(
            None, "--vision-tower", help="real mode: CLIP vision tower (paper: openai/clip-vit-large-patch14-336)"
        ),
        mm_projector: Optional[str] = typer.Option(
            None, "--mm-projector", help="real mode: stage-1 mm_projector.bin, its folder or hub repo"
        ),
        patch_size: int = typer.Option(4, min=1, help="tiny: ViT patch size"),
        global_batch_size: int = typer.Option(16, min=1, help="samples per optimizer step (paper: 128)"),
        per_device_batch_size: Optional[int] = typer.Option(None, min=1, help="samples per forward pass"),
        gradient_accumulation_steps: Optional[int] = typer.Option(
            None, "--gradient-accumulation-steps", min=1, help="micro-batches per optimizer step on each device"
        ),
        nproc_per_node: Optional[str] = typer.Option(
            None,
            "--nproc-per-node",
            help="launch this many processes (one per GPU; gloo on CPU); 'auto' = the GPUs visible; "
            "default: train in this process",
        ),
        lr: Optional[float] = typer.Option(None, help="peak learning rate (default 2e-4 real, 1e-3 tiny)"),
        seed: int = typer.Option(42, help="run seed (initial RNG, data order)"),
        threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads"),
    ) -> None:
        """Continue ONE training run to --to-step on the given samples (SPEC §3.1: steps = samples // batch)."""
        from progress_core.model import ModelConfig, build_tiny_model
        from progress_core.training import TrainingConfig, read_train_state, train_launched

        if (checkpoint is None) == (not init):
            raise ConfigError("give exactly one of --checkpoint (continue) or --init (new run)")
        if mode not in ("tiny", "real"):
            raise ConfigError(f"--mode must be tiny or real, got {mode!r}")
        nproc = _nproc(nproc_per_node)
        if checkpoint is not None:
            _need(checkpoint, "checkpoint")
            final_step = final_step or read_train_state(checkpoint).get("final_step")
        if final_step is None:
            raise ConfigError("--final-step is required for a new run (the schedule spans the whole planned run)")
        ids, _ = _read_ids(samples, "samples")
        rows = _manifest_rows(manifest, ids)
        model_cfg = ModelConfig(
            mode=mode,
            base_model=base_model,
            patch_size=patch_size,
            language_model=language_model,
            vision_tower=vision_tower,
            mm_projector=mm_projector,
        )
        cfg = TrainingConfig(
            model=model_cfg,
            global_batch_size=global_batch_size,
            per_device_batch_size=per_device_batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps,
            nproc_per_node=nproc,
            learning_rate=lr,
            final_step=final_step,
            seed=seed,
            num_threads=threads,
        )
        with tempfile.TemporaryDirectory(prefix="progress-init-") as tmp:
            start = checkpoint
            if init and mode == "tiny":
                from progress_core.manifest import read_manifest

                convs = read_manifest(manifest, columns=["conversations"]).column("conversations").to_pylist()
                texts = [t.get("value", "") for c in convs if c for t in json.loads(c)]
                start = build_tiny_model(texts, model_cfg, Path(tmp) / "init")
            result = train_launched(start, rows, images, to_step, cfg, out, log_line=typer.echo, progress=True)
        last = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
        typer.echo(f"wrote {result.checkpoint}: step {result.step}, samples seen {result.samples_seen}{last}")

    @app.command("probe")
    def probe_cmd(
        checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint directory to probe"),
        manifest: Path = typer.Option(..., "--manifest", help="manifest Parquet"),
        images: Optional[Path] = typer.Option(None, "--images", help="image root the manifest's paths are relative to"),
        selected: Path = typer.Option(..., "--selected", help="Parquet with sample_id: the selected-so-far set"),
        clusters: Path = typer.Option(
            ..., "--clusters", help="annotation cluster assignment Parquet (sample_id, cluster_id)"
        ),
        out: Path = typer.Option(..., "--out", help="directory for probe_samples.parquet and accuracy.parquet"),
        samples_per_cluster: int = typer.Option(
            100, "--samples-per-cluster", min=0, help="probe at most this many per cluster; 0 = all (warm-up probes)"
        ),
        judge: str = typer.Option("exact", "--judge", help="exact | llm"),
        judge_backend: str = typer.Option("lmdeploy", help="llm judge: lmdeploy | transformers"),
        judge_model: str = typer.Option("OpenGVLab/InternVL2-26B", help="llm judge model name or local path"),
        judge_tp: int = typer.Option(1, min=1, help="lmdeploy tensor-parallel size"),
        judge_timeout: Optional[float] = typer.Option(None, help="seconds per judge batch before it is unjudged"),
        mode: str = typer.Option("tiny", help="tiny | real (real: LoRA checkpoints load on --base-model)"),
        base_model: str = typer.Option("llava-hf/llava-1.5-7b-hf", help="real mode: LLaVA base of LoRA checkpoints"),
        language_model: Optional[str] = typer.Option(
            None, "--language-model", help="real mode: assemble from this LLM (paper: lmsys/vicuna-7b-v1.5)"
        ),
        vision_tower: Optional[str] = typer.Option(
            None, "--vision-tower", help="real mode: CLIP vision tower (paper: openai/clip-vit-large-patch14-336)"
        ),
        mm_projector: Optional[str] = typer.Option(
            None, "--mm-projector", help="real mode: stage-1 mm_projector.bin, its folder or hub repo"
        ),
        batch_size: int = typer.Option(64, min=1, help="prompts per generate call"),
        seed: int = typer.Option(42, help="seed of the per-cluster probe sample"),
        threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads"),
    ) -> None:
        """Answer <= N selected samples per annotation cluster, judge them, write per-sample and per-cluster tables."""
        import numpy as np
        import pyarrow as pa

        from progress_core.accuracy import ProbeConfig, probe, probe_sample, save_probe
        from progress_core.judges import JudgeConfig, make_judge
        from progress_core.model import ModelConfig

        if judge not in ("exact", "llm"):
            raise ConfigError(f"--judge must be exact or llm, got {judge!r}")
        _need(checkpoint, "checkpoint")
        sel_ids, _ = _read_ids(selected, "selected set")
        assign_ids, assign = _read_ids(clusters, "cluster assignment")
        if "cluster_id" not in assign.column_names:
            raise TrainInputError(f"cluster assignment {clusters} has no cluster_id column")
        lookup = np.full(int(max(assign_ids.max(initial=-1), sel_ids.max(initial=-1))) + 1, -1, dtype=np.int64)
        lookup[assign_ids] = assign.column("cluster_id").to_numpy(zero_copy_only=False).astype(np.int64)
        sel_clusters = lookup[sel_ids]
        missing = np.flatnonzero(sel_clusters < 0)
        if missing.size:
            raise TrainInputError(f"selected sample_id {int(sel_ids[missing[0]])} has no cluster in {clusters}")
        spc = samples_per_cluster or None
        chosen = probe_sample(sel_ids, sel_clusters, spc, seed)
        rows = _manifest_rows(manifest, chosen)
        rows = rows.append_column("cluster_id", pa.array(lookup[chosen]))
        judge_cfg = JudgeConfig(
            kind=judge, backend=judge_backend, model=judge_model, tp=judge_tp, timeout_s=judge_timeout
        )
        cfg = ProbeConfig(
            samples_per_cluster=spc,
            batch_size=batch_size,
            seed=seed,
            judge=judge_cfg,
            model=ModelConfig(
                mode=mode,
                base_model=base_model,
                language_model=language_model,
                vision_tower=vision_tower,
                mm_projector=mm_projector,
            ),
            num_threads=threads,
        )
        with make_judge(judge_cfg) as judge_impl:
            result = probe(checkpoint, rows, images, judge_impl, cfg, progress=True)
        paths = save_probe(result, out)
        s = result.stats
        typer.echo(
            f"probed {s['n']} samples in {s['clusters']} clusters: {s['correct']} correct, "
            f"{s['unjudged']} unjudged; wrote {paths['per_sample']} and {paths['per_cluster']}"
        )
