"""Ranks asking at once for a model that is not assembled yet: one assembles it, the others wait for it."""

from __future__ import annotations

import threading
import time

import progress_core.model.assembly as assembly
from progress_core.model.config import ModelConfig


def test_concurrent_callers_assemble_once_and_all_get_the_built_model(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PROGRESS_MODEL_CACHE", str(tmp_path / "cache"))
    built: list[str] = []

    def slow_assembly(cfg, out):
        built.append(str(out))
        time.sleep(0.5)
        out.mkdir(parents=True)
        (out / assembly.ASSEMBLY_FILE).write_text("{}")
        return out

    monkeypatch.setattr(assembly, "assemble_llava", slow_assembly)
    cfg = ModelConfig(mode="real", language_model="lm", vision_tower="vt", mm_projector="proj")
    paths: list[str] = []
    with caplog.at_level("INFO", logger="progress_core.file_lock"):
        ranks = [threading.Thread(target=lambda: paths.append(assembly.base_model_path(cfg))) for _ in range(4)]
        for rank in ranks:
            rank.start()
        for rank in ranks:
            rank.join()
    assert len(built) == 1 and paths == built * 4
    assert "waiting for another process building the assembled model" in caplog.text
