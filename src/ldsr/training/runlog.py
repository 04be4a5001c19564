"""The run log: `run_dir/log.csv`, rewritten atomically at each row (columns grow as new keys appear), and
TensorBoard scalars when the optional `tensorboard` package is installed."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any


class RunLog:
    """log.csv (rewritten atomically at each row; columns grow as new keys appear) + optional TensorBoard.

    On resume (`resume_step` given) the rows up to that step are kept, later ones (logged after the
    checkpoint that is resumed) are dropped, so the file reads as if the run had not stopped."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / "log.csv"
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = ["step", "loss", "lr"]
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                for c in reader.fieldnames or []:
                    if c not in self.columns:
                        self.columns.append(c)
                self.rows = [r for r in reader if r.get("step") and int(r["step"]) <= resume_step]
        self.tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # noqa: BLE001 - optional: pip install tensorboard
            self.tb = None

    def add(self, row: dict[str, Any]) -> None:
        """Append `row` (keys: step, loss, lr, ..., seconds last) and rewrite the file."""
        for k in row:
            if k not in self.columns and k != "seconds":
                self.columns.append(k)
        self.rows.append(row)
        cols = [c for c in self.columns if c != "seconds"] + ["seconds"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, restval="", extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        from ldsr.io import atomic_path

        with atomic_path(self.path) as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
