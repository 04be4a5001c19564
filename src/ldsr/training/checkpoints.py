"""Which checkpoint a run starts from (`--resume` or a fresh run dir) and pruning of old checkpoints
(`train.keep_last`). The checkpoint format itself is `ldsr.models.checkpoint`'s."""

from __future__ import annotations

import shutil
from pathlib import Path


def resume_point(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint `--resume` continues from (None for a fresh run).

    A resumed run needs a checkpoint in `run_dir`; a fresh run refuses a `run_dir` that already holds one
    (ValueError), so that no run silently mixes with another's checkpoints and log."""
    from ldsr.models import checkpoint as ck

    latest = ck.latest_checkpoint(run_dir)
    if resume:
        if latest is None:
            raise ValueError(f"--resume: no checkpoint in {run_dir / ck.CHECKPOINTS_DIR} (nothing to resume)")
        return latest
    if latest is not None:
        raise ValueError(
            f"{run_dir} already holds checkpoints: pass --resume to continue, or set train.run_dir to a new folder"
        )
    return None


def prune_checkpoints(ckpt_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step_* folders (0: keep all); the `latest` one is always kept."""
    if keep_last <= 0:
        return
    from ldsr.models.checkpoint import latest_checkpoint

    latest = latest_checkpoint(ckpt_dir)
    folders = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir())
    for p in folders[:-keep_last]:
        if p != latest:
            shutil.rmtree(p, ignore_errors=True)
