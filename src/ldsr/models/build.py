"""One builder for every network of a run config, used by training (`ldsr.training.loop`) and by inference
(`ldsr.pipeline.load`), with the two weight loaders it needs: a trained autoencoder for latent SR
(`load_autoencoder`) and fine-tuning starts (`load_init_weights`).

Model modules stay independent of the run config: each has its own `build_model(section, channels, ...)`;
this module maps `RunConfig.task` to them and decides where weights come from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ldsr.config import RunConfig


def load_autoencoder(path: str, channels: int) -> nn.Module:
    """A trained autoencoder (EMA weights) from its checkpoint folder / run dir, for latent SR."""
    from ldsr.config import from_dict
    from ldsr.models.autoencoder import AutoencoderConfig
    from ldsr.models.autoencoder import build_model as build_ae
    from ldsr.models.checkpoint import load_weights

    state, run = load_weights(path, ema=True)
    if run.get("task") != "autoencoder" or "autoencoder" not in run:
        raise ValueError(f"sr.autoencoder {path}: not an autoencoder checkpoint (task {run.get('task')!r})")
    if run.get("channels") != channels:
        raise ValueError(f"sr.autoencoder {path}: has {run.get('channels')} channels, the run has {channels}")
    ae = build_ae(from_dict(AutoencoderConfig, run["autoencoder"], "autoencoder"), channels)
    ae.load_state_dict(state)
    return ae


def load_init_weights(model: nn.Module, path: str, prefix: str = "") -> None:
    """Initialise `model` from a checkpoint's EMA weights (those whose names start with `prefix`); keys of
    `model` the checkpoint lacks (e.g. a new discriminator) keep their initialisation; shape mismatches are
    errors."""
    from ldsr.models.checkpoint import load_weights

    state, _ = load_weights(path, ema=True)
    own = model.state_dict()
    use = {k: v for k, v in state.items() if k in own and (not prefix or k.startswith(prefix))}
    if not use:
        raise ValueError(f"init_from {path}: no weights match the model")
    bad = [k for k, v in use.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"init_from {path}: shape mismatch for {bad[:5]}")
    model.load_state_dict(use, strict=False)


def _baseline(cfg: RunConfig, state: Mapping[str, torch.Tensor] | None) -> nn.Module:
    from ldsr.models.baselines import build_model as build_baseline

    model = build_baseline(cfg.baseline, cfg.channels, cfg.scale)
    if state is None:
        if cfg.baseline.init_from:
            load_init_weights(model, cfg.baseline.init_from, prefix="generator.")
        return model
    # Inference needs the generator only (a GAN checkpoint also holds its discriminator).
    generator = {k: v for k, v in state.items() if k.startswith("generator.")}
    model.load_state_dict(generator, strict=False)
    missing = [k for k in model.state_dict() if k.startswith("generator.") and k not in generator]
    if missing:
        raise ValueError(f"checkpoint lacks generator weights {missing[:3]}")
    return model


def _sr(cfg: RunConfig, state: Mapping[str, torch.Tensor] | None) -> nn.Module:
    from ldsr.models.sr import build_model as build_sr

    ae: nn.Module | None = None
    if cfg.sr.space == "latent":
        if state is None:  # training: the frozen autoencoder of sr.autoencoder
            if not cfg.sr.autoencoder:
                raise ValueError("sr.autoencoder: latent SR needs the checkpoint of a trained autoencoder")
            ae = load_autoencoder(cfg.sr.autoencoder, cfg.channels)
        else:  # a checkpoint: its weights hold the autoencoder's, its config the architecture
            from ldsr.models.autoencoder import build_model as build_ae

            if cfg.autoencoder is None:
                raise ValueError("latent SR checkpoint has no 'autoencoder' config section to rebuild it from")
            ae = build_ae(cfg.autoencoder, cfg.channels)
    model = build_sr(cfg.sr, cfg.channels, cfg.scale, autoencoder=ae)
    if state is not None:
        model.load_state_dict(state)
    elif cfg.sr.init_from:  # the UNet only: the autoencoder is sr.autoencoder's
        load_init_weights(model, cfg.sr.init_from, prefix="unet.")
    return model


def _generate(cfg: RunConfig, state: Mapping[str, torch.Tensor] | None) -> nn.Module:
    from ldsr.models.generation import build_model as build_gen
    from ldsr.models.generation import load_autoencoder as load_gen_autoencoder
    from ldsr.models.generation import strip_discriminator

    ae: nn.Module | None = None
    if cfg.generate.model == "latent":
        if state is None:  # training: the frozen autoencoder of generate.autoencoder (an AE or latent checkpoint)
            if not cfg.generate.autoencoder:
                raise ValueError("generate.autoencoder: the latent model needs a trained autoencoder checkpoint")
            ae = load_gen_autoencoder(cfg.generate.autoencoder, cfg.channels)
        else:  # a checkpoint: its weights hold the autoencoder's, its config the architecture
            from ldsr.models.autoencoder import build_model as build_ae

            if cfg.autoencoder is None:
                raise ValueError("latent generation checkpoint has no 'autoencoder' config section to rebuild it from")
            ae = strip_discriminator(build_ae(cfg.autoencoder, cfg.channels))
    model = build_gen(cfg.generate, cfg.channels, cfg.data.hr_size, autoencoder=ae)
    if state is not None:
        model.load_state_dict(state)
    return model


def _colorize(cfg: RunConfig, state: Mapping[str, torch.Tensor] | None) -> nn.Module:
    from ldsr.models.colorize import build_model as build_colorizer

    if cfg.channels != 3:
        raise ValueError(f"task colorize makes colour images: set channels: 3 (got {cfg.channels})")
    ae: nn.Module | None = None
    if cfg.colorize.method == "diffusion" and cfg.colorize.space == "latent":
        if state is None:  # training: the frozen RGB autoencoder (of an AE, latent SR or generation checkpoint)
            from ldsr.models.generation import load_autoencoder as load_any_autoencoder

            if not cfg.colorize.autoencoder:
                raise ValueError("colorize.autoencoder: latent diffusion needs a trained 3-channel autoencoder")
            try:
                ae = load_any_autoencoder(cfg.colorize.autoencoder, 3)
            except ValueError as e:
                raise ValueError(str(e).replace("generate.autoencoder", "colorize.autoencoder")) from None
        else:  # a checkpoint: its weights hold the autoencoder's, its config the architecture
            from ldsr.models.autoencoder import build_model as build_ae

            if cfg.autoencoder is None:
                raise ValueError("latent colorize checkpoint has no 'autoencoder' config section to rebuild it from")
            ae = build_ae(cfg.autoencoder, 3)
    model = build_colorizer(cfg.colorize, autoencoder=ae)
    if state is not None:
        model.load_state_dict(state)
    elif cfg.colorize.init_from:
        load_init_weights(model, cfg.colorize.init_from)
    return model


def build_model(cfg: RunConfig, state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The network of `cfg.task` ("autoencoder", "sr", "baseline" or "generate"), through its module's `build_model`.

    Without `state` (training): a fresh network; latent SR loads its frozen autoencoder from the
    `sr.autoencoder` checkpoint, and `init_from` starts the UNet (sr) or the generator (baseline) from a
    checkpoint's EMA weights. With `state` (a checkpoint's weights, for inference): the stored config rebuilds
    the architecture (latent SR: its autoencoder from the config's `autoencoder` section, as checkpoints carry
    it), `state` is loaded, and a baseline keeps its generator's weights only (inference needs no discriminator).
    """
    cfg.resolve()
    if cfg.task == "autoencoder":
        from ldsr.models.autoencoder import build_model as build_ae

        model: nn.Module = build_ae(cfg.autoencoder, cfg.channels)
        if state is not None:
            model.load_state_dict(state)
        return model
    if cfg.task == "baseline":
        return _baseline(cfg, state)
    if cfg.task == "sr":
        return _sr(cfg, state)
    if cfg.task == "generate":
        return _generate(cfg, state)
    if cfg.task == "colorize":
        return _colorize(cfg, state)
    raise ValueError(f"unknown task {cfg.task!r}")
