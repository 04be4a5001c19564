"""The `data:` section of a run config (torch-free, so `ldsr.config` imports it cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ldsr.data.splits import SplitChoice


@dataclass
class DataConfig:
    """The `data:` section of a run config."""

    train: list[str] = field(default_factory=list)  # HR image folders / files (recursive)
    val: list[str] = field(default_factory=list)  # validation folders / files; empty: the train sources
    split: SplitChoice = "train"  # subset of the train sources by `split_rules` (files no rule decides: kept)
    split_rules: list[str] = field(default_factory=list)  # rule files (experiments/splits/*.yaml); none: all used
    val_split: SplitChoice = "test"  # subset of the validation sources
    hr_size: int = 128  # HR crop side; a multiple of the scale
    degradation: str = "bsrgan"  # ldsr.data.degrade preset for on-the-fly LR (HR-folder mode)
    # Mixture weights of `degradation: blind`, e.g. {bicubic: 0.3, light: 0.2, bsrgan: 0.3, kspace: 0.2};
    # empty: the preset's equal weights (kspace is only drawn for 1-channel data).
    degradation_weights: dict[str, float] = field(default_factory=dict)
    # Yield HR crops and per-sample seeds only; the training loop makes LR on its device with
    # ldsr.data.degrade_torch.degrade_batch (HR-folder mode only).
    device_degrade: bool = False
    val_degradation: str | None = None  # preset for validation LR; None: same as `degradation`
    paired: str | None = None  # an `ldsr degrade` output folder (hr/, lr/): train on its fixed pairs instead
    flips: bool = True  # random horizontal / vertical flips
    rot90: bool = False  # random 90-degree rotations
    num_workers: int = 0  # DataLoader worker processes
    val_count: int = 4  # validation images (centre crops), spread evenly over the sorted validation files
    frames: Literal["middle", "all"] = "middle"  # multi-frame DICOM / NIfTI / TIFF: middle frame or every one
    nifti_axis: Literal[0, 1, 2] = 2  # NIfTI slicing axis (0 sagittal, 1 coronal, 2 axial)
    cache: bool = True  # keep decoded images in memory (uint8 / uint16) ...
    cache_max_mb: int = 2048  # ... up to this many MB per process
    # Resize every HR image (MATLAB bicubic, antialiased) so that its shorter side is this many pixels before
    # cropping; 0: off. E.g. 150 for the Kather 2016 tiles in ../shared/data, stored upsampled to 224.
    resize: int = 0

    def __post_init__(self) -> None:
        if self.hr_size < 8:
            raise ValueError(f"data.hr_size must be >= 8, got {self.hr_size}")
        for name in ("num_workers", "val_count", "cache_max_mb", "resize"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        bad = {k: v for k, v in self.degradation_weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"data.degradation_weights must be >= 0, got {bad}")
        if self.device_degrade and self.paired:
            raise ValueError("data.device_degrade needs HR folders (data.train), not a paired folder")
