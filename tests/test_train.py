"""ldsr.training.loop (the loop), ldsr.models.checkpoint and ldsr.data.datasets, with a tiny stand-in model (plus
one real-model run)."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from torch import nn

from ldsr.config import RunConfig, load_config, to_dict
from ldsr.data.datasets import (
    DataConfig,
    HRFolderDataset,
    PairedDataset,
    build_train_dataset,
    build_val_dataset,
    list_pairs,
    list_sources,
)
from ldsr.models import checkpoint as ck
from ldsr.pipeline import load as load_upscaler
from ldsr.training.config import TrainConfig
from ldsr.training.ema import EMA
from ldsr.training.loop import train
from ldsr.training.optim import lr_factor

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny"


class TinySR(nn.Module):
    """Model-protocol stand-in: conv -> pixel shuffle; optional discriminator (two optimizers)."""

    def __init__(self, channels: int = 1, scale: int = 4, gan: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, channels * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )  # fmt: skip
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        if gan:
            self.discriminator = nn.Sequential(
                nn.Conv2d(channels, 4, 3, stride=2), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3)
            )

    def training_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        self.seen += batch["hr"].shape[0]
        sr = self.body(batch["lr"])
        loss = F.l1_loss(sr + 0.01 * torch.randn_like(sr), batch["hr"])  # global RNG: resume must restore it
        logs = {"l1": loss.item()}
        if hasattr(self, "discriminator"):
            loss = loss - 0.01 * self.discriminator(sr).mean()
        return loss, logs

    def discriminator_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        fake = self.body(batch["lr"]).detach()
        loss = F.softplus(-self.discriminator(batch["hr"])).mean() + F.softplus(self.discriminator(fake)).mean()
        return loss, {"d_loss": loss.item()}

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        return self.body(batch["lr"]).clamp(-1, 1)

    def config_dict(self) -> dict:
        return {"arch": "tiny-test"}


def tiny_cfg(run_dir: Path, *overrides: str) -> RunConfig:
    return load_config(TINY / "srcnn.yaml", [f"train.run_dir={run_dir}", *overrides])


def read_log(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ------------------------------------------------------------------------------------------ schedule, EMA


def test_lr_factor_warmup_then_cosine_or_constant() -> None:
    cos = TrainConfig(steps=10, warmup_steps=4, lr_schedule="cosine")
    got = [lr_factor(s, cos) for s in range(11)]
    assert got[:4] == [0.25, 0.5, 0.75, 1.0]
    assert got[4] == 1.0 and got[7] == pytest.approx(0.5) and got[10] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(got[3:], got[4:]))
    floor = TrainConfig(steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(10, floor) == pytest.approx(0.1) and lr_factor(0, floor) == 1.0
    const = TrainConfig(steps=10, warmup_steps=2)
    assert [lr_factor(s, const) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_ema_math_buffers_frozen_and_apply() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    m[1].weight.requires_grad_(False)
    ema = EMA(m, decay=0.9, start=1)
    with torch.no_grad():
        m[0].weight.fill_(1.0)
    ema.update(m, step=1)  # not after `start`: copied
    assert torch.equal(ema.shadow["0.weight"], m[0].weight)
    with torch.no_grad():
        m[0].weight.fill_(3.0)
        m[1].weight.fill_(5.0)
        m[1].running_mean.fill_(7.0)
    ema.update(m, step=2)
    assert torch.allclose(ema.shadow["0.weight"], torch.full((2, 2), 0.9 * 1.0 + 0.1 * 3.0))
    assert torch.equal(ema.shadow["1.weight"], m[1].weight)  # frozen: copied
    assert torch.equal(ema.shadow["1.running_mean"], m[1].running_mean)  # buffer: copied
    with ema.applied(m):
        assert torch.allclose(m[0].weight, torch.tensor(1.2))
    assert torch.equal(m[0].weight, torch.full((2, 2), 3.0))


def test_ema_warmup_forgets_the_initial_weights() -> None:
    """With warm-up the n-th averaged step uses min(decay, (1 + n) / (10 + n)); the share of the initial
    weights after N steps is prod(d_n), tiny where plain decay**N is not."""
    m = nn.Linear(1, 1, bias=False)
    plain, warm = EMA(m, 0.999), EMA(m, 0.999, warmup=True)
    assert warm.decay_at(1) == pytest.approx(2 / 11) and warm.decay_at(10**6) == 0.999
    with torch.no_grad():
        m.weight.fill_(0.0)  # the trained weights: 0 from step 1 on
    for e in (plain, warm):
        e.shadow["weight"].fill_(1.0)  # the initial weights: 1
    for step in range(1, 1101):
        plain.update(m, step)
        warm.update(m, step)
    assert float(plain.shadow["weight"]) == pytest.approx(0.999**1100, rel=1e-4)  # ~0.33 of the init left
    assert float(warm.shadow["weight"]) < 1e-3


# ------------------------------------------------------------------------------------------- checkpoints


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.emb.weight  # tied: shared storage in the state dict


def test_checkpoint_round_trip_tied_weights(tmp_path: Path) -> None:
    m = Tied()
    ema = {k: v + 1 for k, v in m.state_dict().items()}
    config = {"task": "baseline", "channels": 1}
    folder = ck.save_checkpoint(
        tmp_path / "checkpoints" / ck.checkpoint_name(100), model=m, ema=ema, config=config, step=100,
        extra_state={
            "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "groups": [{"betas": (0.9, 0.99), "lr": math.inf}]}
        },
    )  # fmt: skip
    assert folder.name == "step_000100" and (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000100"
    raw, cfg = ck.load_weights(folder, ema=False)
    assert (
        cfg == config and torch.equal(raw["emb.weight"], m.emb.weight) and torch.equal(raw["out.weight"], m.emb.weight)
    )
    for where in (folder, tmp_path, folder / "ema.safetensors"):
        sd, _ = ck.load_weights(where)
        assert torch.equal(sd["emb.weight"], ema["emb.weight"])
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"]) == config and meta["step"] == "100" and meta["ldsr_version"]
    assert ck.read_config(folder / "model.safetensors") == config
    assert ck.read_info(folder)["step"] == 100
    st = ck.load_state(folder)["opt"]
    assert (
        st["state"][0]["step"].item() == 3.0
        and st["groups"][0]["betas"] == (0.9, 0.99)
        and st["groups"][0]["lr"] == math.inf
    )
    m2 = Tied()
    m2.load_state_dict(raw)
    assert torch.equal(m2.out.weight, m.out.weight)


def test_checkpoint_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckdir = tmp_path / "checkpoints"
    m = nn.Linear(2, 2)
    ck.save_checkpoint(ckdir / "step_000001", model=m, ema=None, config={}, step=1)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_tree", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(ckdir / "step_000002", model=m, ema=None, config={}, step=2, extra_state={"x": {}})
    assert sorted(p.name for p in ckdir.iterdir()) == ["latest", "step_000001"]  # no partial or hidden folder
    assert ck.latest_checkpoint(tmp_path) == ckdir / "step_000001"
    with pytest.raises(ValueError, match="no training state"):
        ck.load_state(ckdir / "step_000001")
    with pytest.raises(ValueError, match="not a checkpoint"):
        ck.load_weights(tmp_path / "nothing")


# --------------------------------------------------------------------------------------------------- data


def test_hr_dataset_shapes_channels_and_determinism() -> None:
    cfg = DataConfig(train=[str(ROOT / "fixtures" / "histology")], split="all", hr_size=32, degradation="bicubic")
    for channels in (1, 3):
        ds = build_train_dataset(cfg, channels=channels, scale=4, seed=1)
        assert isinstance(ds, HRFolderDataset) and len(ds) == 4
        item = ds[5]
        assert item["hr"].shape == (channels, 32, 32) and item["lr"].shape == (channels, 8, 8)
        assert item["hr"].dtype == torch.float32 and -1 <= item["hr"].min() and item["hr"].max() <= 1
        assert item["name"].endswith(".png")
    again = build_train_dataset(cfg, channels=3, scale=4, seed=1)
    a, b = ds[5], again[5]
    assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
    assert not torch.equal(ds[6]["hr"], a["hr"])
    # every file once per epoch (a permutation), a new order in the next epoch
    epoch0 = [ds.file_index(k) for k in range(4)]
    assert sorted(epoch0) == [0, 1, 2, 3]
    grey = build_train_dataset(DataConfig(train=[str(ROOT / "fixtures" / "mri")], split="all", hr_size=32,
                                          degradation="bicubic"), channels=3, scale=4, seed=0)  # fmt: skip
    g = grey[0]["hr"]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # grey -> RGB repeats


MRI_RULES = [str(ROOT / "experiments" / "splits" / f"{d}.yaml") for d in ("figshare", "colin27")]  # fixtures: test


def test_split_small_images_and_val(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no training images"):
        build_train_dataset(
            DataConfig(train=[str(ROOT / "fixtures" / "mri")], split="train", split_rules=MRI_RULES),
            channels=1,
            scale=4,
            seed=0,
        )
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "small.png")
    ds = build_train_dataset(
        DataConfig(train=[str(tmp_path)], hr_size=32, degradation="bicubic"), channels=1, scale=4, seed=0
    )
    with pytest.raises(ValueError, match=r"small\.png: is 20x24 pixels, smaller than data.hr_size 32"):
        ds[0]
    vcfg = DataConfig(train=[str(ROOT / "fixtures" / "mri")], val_split="test", hr_size=32, val_count=3)
    v1 = build_val_dataset(vcfg, channels=1, scale=4, seed=0)
    v2 = build_val_dataset(vcfg, channels=1, scale=4, seed=0)
    assert v1 is not None and v2 is not None and len(v1) == 3
    assert all(torch.equal(a["lr"], b["lr"]) for a, b in zip(v1.items, v2.items))
    assert (
        build_val_dataset(
            DataConfig(train=[str(ROOT / "fixtures" / "mri")], val_split="train", split_rules=MRI_RULES),
            channels=1,
            scale=4,
            seed=0,
        )
        is None
    )


def test_resize_shorter_side_before_cropping(tmp_path: Path) -> None:
    # A 224x300 image (like the Kather 2016 copies, stored upsampled from 150) resized so its shorter side is 150.
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (224, 300, 3), dtype=np.uint8)).save(tmp_path / "tile.png")
    from ldsr.data.datasets import resize_shorter_side
    from ldsr.data.resize import imresize

    ds = build_train_dataset(DataConfig(train=[str(tmp_path)], hr_size=150, resize=150, degradation="bicubic",
                                        flips=False), channels=3, scale=2, seed=0)  # fmt: skip
    img, _ = ds.cache.get(ds.sources[0])
    assert img.shape == (150, 201, 3)  # 300 * 150 / 224 = 200.9
    ref = np.asarray(Image.open(tmp_path / "tile.png"), dtype=np.float32) / 255
    expected = np.clip(imresize(ref, size=(150, 201)), 0, 1)
    assert np.abs(img - expected).max() <= 0.5 / 255 + 1e-6  # the cache stores 8-bit
    assert ds[0]["hr"].shape == (3, 150, 150)
    square = np.zeros((150, 150, 3), np.float32)
    assert resize_shorter_side(square, 150) is square  # already the size: untouched
    with pytest.raises(ValueError, match="data.resize must be >= 0"):
        DataConfig(resize=-1)


def test_paired_dataset_crops_match(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, c in (("a", 1), ("b", 1)):
        hr = rng.integers(0, 256, (64, 48, 1), dtype=np.uint8).repeat(c, axis=2)
        lr = hr.reshape(16, 4, 12, 4, c).astype(np.float64).mean(axis=(1, 3)).round().astype(np.uint8)
        for sub, arr in (("hr", hr), ("lr", lr)):
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(arr[:, :, 0]).save(tmp_path / sub / f"{name}.png")
    assert len(list_pairs(tmp_path, "all")) == 2
    cfg = DataConfig(paired=str(tmp_path), hr_size=32, flips=True, rot90=True)
    ds = build_train_dataset(cfg, channels=1, scale=4, seed=0)
    assert isinstance(ds, PairedDataset)
    for k in range(6):
        item = ds[k]
        assert item["hr"].shape == (1, 32, 32) and item["lr"].shape == (1, 8, 8)
        pooled = F.avg_pool2d(item["hr"][None], 4)[0]
        assert torch.allclose(pooled, item["lr"], atol=2.5 / 255 * 2)  # same region, same flips / rotation
    val = build_val_dataset(cfg, channels=1, scale=4, seed=0)
    assert val is not None and val[0]["lr"].shape == (1, 8, 8)
    (tmp_path / "lr" / "b.png").unlink()
    with pytest.raises(ValueError, match="no matching low-resolution file"):
        list_pairs(tmp_path, "all")


def test_list_sources_all_frames() -> None:
    srcs = list_sources([str(ROOT / "fixtures" / "dicom")], "all", frames="all")
    assert len(srcs) == 11 and sum(s.frame is not None for s in srcs) == 10


# --------------------------------------------------------------------------------------------------- loop


def test_train_log_checkpoints_and_refusals(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.steps=4", "train.ckpt_every=2", "train.val_every=2", "train.warmup_steps=2")
    torch.manual_seed(0)
    final = train(cfg, model=TinySR(), progress=False)
    assert final == run / "checkpoints" / "step_000004"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000002", "step_000004"]
    rows = read_log(run)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert list(rows[0])[:3] == ["step", "loss", "lr"] and list(rows[0])[-1] == "seconds"
    assert {"l1", "val_psnr", "val_ssim"} <= set(rows[0])
    assert [float(r["lr"]) for r in rows] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3])
    assert rows[0]["val_psnr"] == "" and 0 < float(rows[1]["val_psnr"]) < 100 and -1 <= float(rows[3]["val_ssim"]) <= 1
    info = ck.read_info(final)
    assert info["config"] == to_dict(cfg) and info["model_config"] == {"arch": "tiny-test"} and info["step"] == 4
    ema, raw = tensors(final / "ema.safetensors"), tensors(final / "model.safetensors")
    assert set(ema) == set(raw) and not torch.equal(ema["body.0.weight"], raw["body.0.weight"])
    assert int(raw["seen"]) == 8  # 4 steps x batch 2
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(cfg, model=TinySR(), progress=False)
    with pytest.raises(ValueError, match="nothing to resume"):
        train(tiny_cfg(tmp_path / "empty"), model=TinySR(), resume=True, progress=False)


@pytest.mark.parametrize(
    "extra, gan",
    [
        ((), False),
        (("train.grad_accum=2", "train.lr_schedule=cosine", "train.ema_start=2", "data.rot90=true"), True),
    ],
    ids=["plain", "gan-accum-cosine"],
)
def test_resume_is_exact(tmp_path: Path, extra: tuple[str, ...], gan: bool) -> None:
    common = ("train.steps=6", "train.ckpt_every=3", "train.val_every=3", "train.warmup_steps=2", *extra)
    torch.manual_seed(0)
    a = train(tiny_cfg(tmp_path / "a", *common), model=TinySR(gan=gan), progress=False)
    torch.manual_seed(0)
    half = train(tiny_cfg(tmp_path / "b", *common), model=TinySR(gan=gan), progress=False, stop_after=3)
    assert half.name == "step_000003"
    torch.manual_seed(123)  # a different fresh init and RNG: all must come from the checkpoint
    b = train(tiny_cfg(tmp_path / "b", *common), model=TinySR(gan=gan), resume=True, progress=False)
    assert a.name == b.name == "step_000006"
    for f in ("model.safetensors", "ema.safetensors", "state/optimizer.safetensors"):
        ta, tb = tensors(a / f), tensors(b / f)
        assert set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta), f
    if gan:
        ta, tb = tensors(a / "state/optimizer_d.safetensors"), tensors(b / "state/optimizer_d.safetensors")
        assert all(torch.equal(ta[k], tb[k]) for k in ta)
    la, lb = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(la) == drop(lb) and len(la) == 6


def test_real_autoencoder_then_latent_sr(tmp_path: Path) -> None:
    """The real tiny VQ-VAE through the loop (latent scale measured), then latent SR on it (self-contained)."""
    ae_run = tmp_path / "vq"
    ae = train(
        load_config(TINY / "vqvae.yaml", [f"train.run_dir={ae_run}", "train.steps=2", "train.val_every=0"]),
        progress=False,
    )
    info = ck.read_info(ae)
    assert info["config"]["task"] == "autoencoder" and info["scale_factor"] > 0
    assert float(tensors(ae / "ema.safetensors")["scale_factor"]) == pytest.approx(info["scale_factor"], rel=1e-6)
    assert float(tensors(ae / "model.safetensors")["scale_factor"]) == pytest.approx(info["scale_factor"], rel=1e-6)
    sr_cfg = load_config(
        TINY / "ldm_sr.yaml", [f"train.run_dir={tmp_path / 'sr'}", f"sr.autoencoder={ae_run}", "train.steps=2"]
    )
    sr = train(sr_cfg, progress=False)
    sd, cfg = ck.load_weights(sr)
    assert cfg["task"] == "sr" and ck.read_info(sr)["autoencoder_config"]["autoencoder"]["kind"] == "vqvae"
    ae_sd, _ = ck.load_weights(ae)
    for k, v in ae_sd.items():  # the frozen autoencoder travels inside the SR checkpoint, unchanged
        assert torch.equal(sd[f"autoencoder.{k}"], v)
    assert cfg["autoencoder"] == info["config"]["autoencoder"]  # the SR config can rebuild its autoencoder
    up = load_upscaler(sr)  # the checkpoint alone rebuilds the model (ldsr.pipeline)
    assert up.scale == 4
    rows = read_log(tmp_path / "sr")
    assert rows[-1]["step"] == "2" and float(rows[-1]["val_psnr"]) > 0
    # fine-tuning: sr.init_from starts the UNet from that checkpoint's EMA weights (the autoencoder stays its own)
    from ldsr.models.build import build_model

    ft = build_model(
        load_config(
            TINY / "ldm_sr.yaml", [f"train.run_dir={tmp_path / 'ft'}", f"sr.autoencoder={ae_run}", f"sr.init_from={sr}"]
        )
    )
    ema, _ = ck.load_weights(sr, ema=True)
    own = ft.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ema.items() if k.startswith("unet."))


# Ceilings for the subprocess runs below, not expected durations (a few seconds each on an idle machine): on a
# loaded 2-core CI runner (`pytest -n 2`, other jobs) starting Python + torch + accelerate can take a minute.
# They only decide how long a broken run takes to fail; a passing run returns as soon as it is done.
_START_S = 300.0
_STOP_S = 300.0


@contextlib.contextmanager
def _long_training(run: Path, *overrides: str, new_session: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """`ldsr train baseline` (tiny SRCNN, 10^6 steps) in a subprocess, yielded once it has logged 3 steps.
    Its stderr goes to `run.parent / "stderr.txt"` (a file: tqdm's bar can never fill a pipe and block it).
    Whatever happens, the run (its whole process group with `new_session`) is killed on the way out."""
    args = [sys.executable, "-m", "ldsr", "train", "baseline", "-c", str(TINY / "srcnn.yaml"),
            "train.steps=1000000", "train.ckpt_every=0", "train.val_every=0", "train.log_every=1",
            *overrides, f"train.run_dir={run}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(run.parent / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=new_session)
    try:
        log = run / "log.csv"
        deadline = time.monotonic() + _START_S
        while proc.poll() is None and not (log.exists() and len(log.read_text().splitlines()) > 3):
            assert time.monotonic() < deadline, f"no 3 logged steps within {_START_S:g} s: {_stderr(run)}"
            time.sleep(0.1)
        assert proc.poll() is None, f"exit {proc.returncode} before the signal: {_stderr(run)}"
        yield proc
    finally:
        if proc.poll() is None:
            if new_session:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()


def _stderr(run: Path) -> str:
    return (run.parent / "stderr.txt").read_text(errors="replace")[-4000:]


def _wait(proc: subprocess.Popen[bytes], run: Path) -> str:
    """The exit of a signalled run; its stderr."""
    try:
        proc.wait(timeout=_STOP_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {_STOP_S:g} s after the signal: {_stderr(run)}")
    return _stderr(run)


def test_sigterm_checkpoints_and_resumes(tmp_path: Path) -> None:
    """SIGTERM (a scheduler's preemption, `timeout`) ends the run after its step with a checkpoint; --resume
    then continues from that step."""
    run = tmp_path / "run"
    with _long_training(run) as proc:
        proc.send_signal(signal.SIGTERM)
        err = _wait(proc, run)
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping at step" in err
    latest = ck.latest_checkpoint(run)
    assert latest is not None
    stopped = int(latest.name.removeprefix("step_"))
    assert 3 <= stopped < 1_000_000

    cfg = load_config(TINY / "srcnn.yaml", ["train.steps=1000000", "train.ckpt_every=0", "train.val_every=0",
                                            f"train.run_dir={run}"])  # fmt: skip
    out = train(cfg, resume=True, progress=False, stop_after=2)
    assert out.name == ck.checkpoint_name(stopped + 2)


def test_max_minutes_stops_with_checkpoint(tmp_path: Path) -> None:
    cfg = load_config(TINY / "srcnn.yaml", ["train.steps=1000", "train.ckpt_every=0", "train.val_every=0",
                                            "train.max_minutes=1e-9", f"train.run_dir={tmp_path}"])  # fmt: skip
    out = train(cfg, progress=False)
    assert out.name == ck.checkpoint_name(1)  # the budget is checked after each step
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert rows[-1]["step"] == "1" and float(rows[-1]["val_psnr"]) > 0  # logged and validated at the stop
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=-1.0)


def test_precision_can_change_between_runs_in_one_process(tmp_path: Path) -> None:
    """accelerate fixes mixed precision per process; train() starts its own state for each call."""
    for precision in ("bf16", "no"):
        cfg = load_config(TINY / "srcnn.yaml", [f"train.precision={precision}", "train.steps=2", "train.val_every=0",
                                                f"train.run_dir={tmp_path / precision}"])  # fmt: skip
        out = train(cfg, progress=False)
        assert out.name == ck.checkpoint_name(2)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_to_process_group_with_loader_workers(tmp_path: Path, sig: str) -> None:
    """Ctrl-C (SIGINT) and SLURM (SIGTERM) signal the whole process group, loader workers included: the run
    still ends with a checkpoint and exit code 0 (the workers ignore the signal, so torch's SIGCHLD check
    cannot raise "DataLoader worker ... is killed by signal" in the middle of the stop), no worker left."""
    run = tmp_path / "run"
    with _long_training(run, "data.num_workers=1", new_session=True) as proc:
        os.killpg(proc.pid, getattr(signal, sig))
        err = _wait(proc, run)
    assert proc.returncode == 0, err
    assert f"{sig}: stopping at step" in err and "DataLoader worker" not in err
    latest = ck.latest_checkpoint(run)
    assert latest is not None and int(latest.name.removeprefix("step_")) >= 3
    # the workers left with the run: nothing of its process group is alive
    deadline = time.monotonic() + 30.0
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, "a loader worker outlived the run"
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_loader_failure_after_a_signal_still_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the loader fails after a stop signal (a worker lost to it before its `ignore_interrupt` ran, or
    killed outright), the step in progress is dropped and the run stops at the last completed step with a
    checkpoint; without a signal the loader's error propagates."""
    import ldsr.data.datasets as data

    build = data.build_train_dataset

    class Dying(torch.utils.data.Dataset):
        def __init__(self, ds, kill_at: int | None) -> None:  # noqa: ANN001
            self.ds, self.kill_at = ds, kill_at

        def __len__(self) -> int:
            return len(self.ds)

        def __getitem__(self, k: int):  # noqa: ANN204
            if self.kill_at is not None and k == self.kill_at:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler only records it
                raise RuntimeError("loader worker killed")
            return self.ds[k]

    for kill_at, expect in ((10, "stop"), (None, "ok")):
        monkeypatch.setattr(data, "build_train_dataset", lambda *a, _k=kill_at, **kw: Dying(build(*a, **kw), _k))
        cfg = load_config(TINY / "srcnn.yaml", ["train.steps=20", "train.batch_size=2", "train.ckpt_every=0",
                                                "train.val_every=0",
                                                f"train.run_dir={tmp_path / str(kill_at)}"])  # fmt: skip
        out = train(cfg, progress=False)
        # batch 2: sample 10 belongs to step 6, so steps 1-5 completed
        assert out.name == ck.checkpoint_name(5 if expect == "stop" else 20)

    class Broken(Dying):
        def __getitem__(self, k: int):  # noqa: ANN204
            raise RuntimeError("corrupt sample")

    monkeypatch.setattr(data, "build_train_dataset", lambda *a, **kw: Broken(build(*a, **kw), None))
    cfg = load_config(TINY / "srcnn.yaml", ["train.steps=3", f"train.run_dir={tmp_path / 'broken'}"])
    with pytest.raises(RuntimeError, match="corrupt sample"):
        train(cfg, progress=False)


def test_loader_workers_ignore_stop_signals_and_close() -> None:
    """A worker started with `ignore_interrupt` survives SIGTERM and SIGINT (the loader keeps delivering), and
    `close_loader` ends it at once."""
    from torch.utils.data import DataLoader, TensorDataset

    from ldsr.training.stop import close_loader, ignore_interrupt

    ds = TensorDataset(torch.arange(64.0))
    loader = DataLoader(ds, batch_size=4, num_workers=1, worker_init_fn=ignore_interrupt, persistent_workers=True)
    it = iter(loader)
    try:
        assert next(it)[0].tolist() == [0.0, 1.0, 2.0, 3.0]  # the worker is past its worker_init_fn
        (worker,) = it._workers  # type: ignore[attr-defined]  # torch's private list of worker processes
        for sig in (signal.SIGTERM, signal.SIGINT):
            os.kill(worker.pid, sig)  # an ignored signal is discarded when sent: nothing left pending
        assert worker.is_alive()
        assert [next(it)[0].tolist() for _ in range(2)] == [[4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]]
    finally:
        close_loader(it)
    assert not worker.is_alive()
    close_loader(it)  # idempotent; and a no-op for a loader without workers
    close_loader(iter(DataLoader(ds)))


def test_stop_request_forgives_a_dead_worker_only_during_a_stop() -> None:
    """Torch's SIGCHLD handler raises "DataLoader worker ... is killed by signal" wherever the main thread is;
    inside StopRequest that error is recorded, not raised, once a stop was asked for (the worker died from the
    stop signal); before, and for any other error, it propagates. Handlers are restored on exit."""
    from ldsr.training.stop import StopRequest

    message = ["DataLoader worker (pid 4242) is killed by signal: Terminated."]

    def torch_like(signum: int, frame: object) -> None:
        raise RuntimeError(message[0])

    old_chld = signal.signal(signal.SIGCHLD, torch_like)
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        with StopRequest() as stop:
            handler = signal.getsignal(signal.SIGCHLD)
            assert callable(handler) and handler is not torch_like
            with pytest.raises(RuntimeError, match="killed by signal"):
                handler(signal.SIGCHLD, None)  # no stop asked for: torch's behaviour
            os.kill(os.getpid(), signal.SIGTERM)  # recorded by StopRequest (the process goes on)
            assert stop.signum == signal.SIGTERM
            handler(signal.SIGCHLD, None)
            assert stop.lost_worker == message[0]
            message[0] = "something else"
            with pytest.raises(RuntimeError, match="something else"):
                handler(signal.SIGCHLD, None)
        assert signal.getsignal(signal.SIGCHLD) is torch_like
        assert signal.getsignal(signal.SIGTERM) == old_term
    finally:
        signal.signal(signal.SIGCHLD, old_chld)
        signal.signal(signal.SIGTERM, old_term)
