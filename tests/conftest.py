"""Shared test set-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny networks: one intra-op thread is fastest on a shared 2-core machine (no oversubscription)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny run dirs trained for two steps (read-only for tests): a VQ-VAE ("ae"), a latent SR model on it,
    a pixel SR3 and an SRCNN."""
    from ldsr.config import load_config
    from ldsr.training.loop import train

    d = tmp_path_factory.mktemp("runs")
    common = ["train.steps=2", "train.val_every=0"]

    def run(config: str, name: str, *extra: str) -> Path:
        return train(load_config(TINY / config, [f"train.run_dir={d / name}", *extra, *common]), progress=False)

    out = {"ae": run("vqvae.yaml", "ae")}
    out["latent"] = run("ldm_sr.yaml", "ldm", f"sr.autoencoder={d / 'ae'}")
    out["pixel"] = run("sr3.yaml", "sr3")
    out["baseline"] = run("srcnn.yaml", "srcnn")
    return out
