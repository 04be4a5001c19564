"""Automatic model choice (ldsr.pipeline.select): only where the input says what it shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ldsr.io import read_image
from ldsr.pipeline.select import ModelInfo, choose_model, classify, he_statistics, is_he_stained

FIX = Path(__file__).resolve().parents[1] / "fixtures"
HE = sorted((FIX / "histology").glob("*.png")) + [FIX / "tiff" / "histo8.tif"]
MODELS = {
    "histology-x4": ModelInfo("histology-x4", 3, 4, "histology"),
    "histology-x8": ModelInfo("histology-x8", 3, 8, "histology"),
    "mri-x4": ModelInfo("mri-x4", 1, 4, "mri"),
}


@pytest.mark.parametrize("path", HE, ids=lambda p: p.name)
def test_he_tiles_are_histology(path: Path) -> None:
    image, meta = read_image(path)
    _, green = he_statistics(image)
    assert green > 0.95  # measured 0.98 - 1.00
    assert classify(image, meta.format) == "histology"
    assert choose_model(image, meta.format, MODELS) == ("histology-x4", "histology")
    assert choose_model(image, meta.format, MODELS, scale=8) == ("histology-x8", "histology")


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina"])
def test_photos_and_other_stains_are_not_guessed(name: str) -> None:
    data = pytest.importorskip("skimage.data")
    image = getattr(data, name)()[..., :3] / 255.0
    _, green = he_statistics(image)
    assert green < 0.5  # measured 0.002 - 0.25
    assert not is_he_stained(image) and classify(image, "png") is None
    with pytest.raises(ValueError, match="pass -m with one of: histology-x4, histology-x8, mri-x4, bicubic"):
        choose_model(image, "png", MODELS)


def test_grey_scans_are_mri_and_scale_must_exist() -> None:
    for path in (FIX / "mri" / "colin27_z141.png", FIX / "dicom" / "MR_small.dcm", FIX / "png16" / "mri16.png"):
        image, meta = read_image(path)
        assert choose_model(image, meta.format, MODELS) == ("mri-x4", "mri")
    with pytest.raises(ValueError, match="no shipped mri model takes it at x8"):
        choose_model(np.zeros((8, 8, 1), np.float32), "png", MODELS, scale=8)
    # An RGB copy of a grey scan is not guessed as MRI (the grey model would silently drop two channels).
    grey, _ = read_image(FIX / "mri" / "colin27_z141.png")
    assert classify(np.repeat(grey, 3, axis=2), "png") is None
