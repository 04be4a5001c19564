"""`ldsr generate` and `ldsr evaluate-generation` on tiny checkpoints trained here (two steps on fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ldsr.cli import app
from ldsr.config import config_from_dict
from ldsr.io import read_image
from ldsr.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
MRI = str(ROOT / "fixtures" / "mri")


def _train(run_dir: Path, generate: dict) -> Path:
    cfg = {
        "task": "generate", "channels": 1, "seed": 0,
        "data": {"train": [MRI], "split": "all", "hr_size": 32, "degradation": "bicubic", "val_count": 0},
        "train": {"steps": 2, "batch_size": 2, "lr": 1e-3, "val_every": 0, "run_dir": str(run_dir)},
        "generate": generate,
    }  # fmt: skip
    return train(config_from_dict(cfg), progress=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gen_ckpt")
    return {
        "pixel": _train(d / "pixel", {"model": "pixel", "unet": "tiny", "timesteps": 50, "steps": 3}),
        "gan": _train(d / "gan", {"model": "gan", "gan_latent": 8, "gan_features": 4}),
    }


def invoke(*args: str):  # noqa: ANN201 - typer's Result
    return CliRunner().invoke(app, list(args))


def test_generate_writes_samples_grid_and_run(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = str(checkpoints["pixel"])
    a = invoke("generate", "-m", ckpt, "-n", "3", "-o", str(tmp_path / "a"), "--steps", "2", "--sampler", "dpmpp",
               "--seed", "5", "--batch", "2", "-q")  # fmt: skip
    assert a.exit_code == 0, a.output
    b = invoke("generate", "-m", ckpt, "-n", "3", "-o", str(tmp_path / "b"), "--steps", "2", "--sampler", "dpmpp",
               "--seed", "5", "--batch", "3", "-q")  # fmt: skip
    assert b.exit_code == 0, b.output
    names = sorted(p.name for p in (tmp_path / "a" / "samples").iterdir())
    assert names == ["sample_0000.png", "sample_0001.png", "sample_0002.png"]
    for name in names:  # same seed, same images, whatever the batch
        assert (tmp_path / "a" / "samples" / name).read_bytes() == (tmp_path / "b" / "samples" / name).read_bytes()
    assert (tmp_path / "a" / "samples" / names[0]).read_bytes() != (tmp_path / "a" / "samples" / names[1]).read_bytes()
    run = json.loads((tmp_path / "a" / "generation_run.json").read_text())
    assert run["sampler"] == "dpmpp" and run["steps"] == 2 and run["nfe"] == 2 and run["parameters"] > 0
    assert run["seconds_per_sample"] > 0 and run["peak_memory_mb"] > 0
    grid, _ = read_image(tmp_path / "a" / "grid.png")
    assert grid.shape == (66, 66, 1)  # 2 x 2 cells of 32 px, 2 px apart


def test_generate_ddpm_records_the_chain_it_walked(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """--sampler ddpm walks every step of the chain: generation_run.json says so (steps = NFE), not --steps."""
    res = invoke("generate", "-m", str(checkpoints["pixel"]), "-n", "1", "-o", str(tmp_path), "--sampler", "ddpm",
                 "--steps", "3", "-q")  # fmt: skip
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "generation_run.json").read_text())
    assert run["sampler"] == "ddpm" and run["steps"] == run["nfe"] > 3


def test_generate_gan_16bit_tiff(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    res = invoke("generate", "-m", str(checkpoints["gan"]), "-n", "2", "-o", str(tmp_path), "--format", "tif",
                 "--bits", "16", "-q")  # fmt: skip
    assert res.exit_code == 0, res.output
    img, meta = read_image(tmp_path / "samples" / "sample_0001.tif")
    assert meta.bit_depth == 16 and img.shape == (32, 32, 1)
    assert json.loads((tmp_path / "generation_run.json").read_text())["nfe"] == 1


@pytest.mark.parametrize("fmt", ["dcm", "nii"])
def test_generate_dicom_and_nifti_samples_marked_synthetic(checkpoints: dict[str, Path], tmp_path: Path,
                                                           fmt: str) -> None:  # fmt: skip
    """--format dcm / nii: one file per sample that reads back as the PNG sample of the same seed (16-bit grid),
    marked as synthetic (DICOM: Secondary Capture, ConversionType SYN, one series; NIfTI: header descrip)."""
    import nibabel as nib
    import numpy as np
    import pydicom

    gan = str(checkpoints["gan"])
    res = invoke("generate", "-m", gan, "-n", "2", "-o", str(tmp_path / fmt), "--format", fmt, "--bits", "16", "-q")
    assert res.exit_code == 0, res.output
    assert invoke("generate", "-m", gan, "-n", "2", "-o", str(tmp_path / "png"), "--bits", "16", "-q").exit_code == 0
    files = sorted((tmp_path / fmt / "samples").iterdir())
    assert [f.name for f in files] == [f"sample_0000.{fmt}", f"sample_0001.{fmt}"]
    for i, f in enumerate(files):
        ref, _ = read_image(tmp_path / "png" / "samples" / f"sample_000{i}.png")
        img, _ = read_image(f)  # DICOM / NIfTI read through their own (min, max) window
        lo, hi = ref.min(), ref.max()
        assert img.shape == ref.shape and np.abs(img - (ref - lo) / (hi - lo)).max() < 1e-3
    if fmt == "dcm":
        ds = [pydicom.dcmread(f) for f in files]
        assert all(d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and d.ConversionType == "SYN" for d in ds)
        assert ds[0].SeriesInstanceUID == ds[1].SeriesInstanceUID and ds[0].SOPInstanceUID != ds[1].SOPInstanceUID
        assert "SYNTHETIC" in ds[0].ImageComments and ds[0].PatientName == "SYNTHETIC" and ds[0].BitsStored == 16
    else:
        assert b"SYNTHETIC" in nib.load(files[0]).header["descrip"].tobytes()


def test_generate_nifti_of_colour_model_is_one_line(tmp_path: Path) -> None:
    d = tmp_path / "rgb"
    cfg = {
        "task": "generate", "channels": 3, "seed": 0,
        "data": {"train": [str(ROOT / "fixtures" / "histology")], "split": "all", "hr_size": 32,
                 "degradation": "bicubic", "val_count": 0},
        "train": {"steps": 1, "batch_size": 2, "val_every": 0, "run_dir": str(d)},
        "generate": {"model": "gan", "gan_latent": 8, "gan_features": 4},
    }  # fmt: skip
    ckpt = train(config_from_dict(cfg), progress=False)
    res = invoke("generate", "-m", str(ckpt), "-n", "1", "-o", str(tmp_path / "out"), "--format", "nii")
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"error: --format nii: {ckpt} makes 3-channel images; NIfTI samples are grey"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "no-such-model", "-n", "2"], "unknown model 'no-such-model'"),
        (["-m", "PIXEL", "-n", "0"], "-n must be >= 1, got 0"),
        (["-m", "PIXEL", "-n", "2", "--batch", "0"], "--batch must be >= 1"),
        (["-m", "PIXEL", "-n", "2", "--bits", "12"], "--bits must be 8 or 16"),
        (["-m", "SR", "-n", "2"], "not a generator"),
    ],
)
def test_generate_bad_arguments_one_line(checkpoints: dict[str, Path], tmp_path: Path, args: list[str],
                                         message: str, request: pytest.FixtureRequest) -> None:  # fmt: skip
    sr = ROOT / "src" / "ldsr" / "assets" / "models" / "mri-x4"
    args = [{"PIXEL": str(checkpoints["pixel"]), "SR": str(sr)}.get(a, a) for a in args]
    res = CliRunner().invoke(app, ["generate", *args, "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output


def test_generate_unwritable_output(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    res = invoke("generate", "-m", str(checkpoints["pixel"]), "-n", "1", "-o", str(blocker / "out"))
    assert res.exit_code == 2
    assert res.output.strip().startswith(f"error: {blocker / 'out'}: cannot write there"), res.output
    assert len(res.output.strip().splitlines()) == 1


def test_evaluate_generation_cli(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    gen = invoke("generate", "-m", str(checkpoints["gan"]), "-n", "4", "-o", str(tmp_path / "g"), "-q")
    assert gen.exit_code == 0, gen.output
    res = invoke("evaluate-generation", "--real", MRI, "--fake", str(tmp_path / "g"), "--train", MRI,
                 "--out", str(tmp_path / "eval"))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "ldsr-rpstats v1" in res.output and "near-copy share 0.000" in res.output
    assert "seconds_per_sample" in res.output  # read from the generate run's generation_run.json
    report = json.loads((tmp_path / "eval" / "generation.json").read_text())
    assert report["n_fake"] == 4 and report["run"]["kind"] == "gan"
    missing = invoke("evaluate-generation", "--real", MRI, "--fake", str(tmp_path / "g"), "--out",
                     str(tmp_path / "e2"), "--inception", str(tmp_path / "none.safetensors"))  # fmt: skip
    assert missing.exit_code == 2 and "none.safetensors: file not found" in missing.output
