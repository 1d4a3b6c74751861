"""Model directories written atomically, and what kind of checkpoint a directory holds."""

from __future__ import annotations

import os
from pathlib import Path

from progress_core.errors import ProgressError


class ModelError(ProgressError):
    """A model or processor cannot be built or loaded from the given path or config."""


def save_model_dir(model, processor, out_dir: str | os.PathLike, extra_files: dict[str, bytes] | None = None) -> Path:
    """Save model + processor (+ extra files) to a temp dir and atomically rename it onto ``out_dir``."""
    import shutil
    import tempfile

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a peft adapter (real-mode checkpoint) rather than full weights."""
    return (Path(path) / "adapter_config.json").is_file()
