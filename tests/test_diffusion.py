"""Diffusion core: schedules against closed forms, the forward process, the objective, the samplers."""

from __future__ import annotations

import math

import pytest
import torch

from ldsr.diffusion.objective import diffusion_loss, prediction_target, q_sample
from ldsr.diffusion.sampling import _clip_output, sample
from ldsr.diffusion.schedules import alphas_cumprod, betas_for
from ldsr.models.unets import UNET_PRESETS, count_parameters

SCHEDULES = ("cosine", "linear", "quadratic", "sigmoid")


# ------------------------------------------------------------------------------------------------ schedules
def test_cosine_matches_closed_form_alpha_bar() -> None:
    T, s = 2000, 0.008
    betas = betas_for("cosine", T)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    f = lambda t: math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    abar = alphas_cumprod(betas)
    for t in (1, 10, 500, 1000, 1500, 1990):  # abar after t steps = f(t) / f(0) until the 0.999 clip bites
        assert abar[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-9)


@pytest.mark.parametrize("T", [1, 10, 1000, 2000, 4000])
@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_valid_and_monotone(name: str, T: int) -> None:
    betas = betas_for(name, T)
    assert betas.shape == (T,) and betas.dtype == torch.float64
    assert (betas > 0).all() and (betas <= 0.999).all()
    assert (betas[1:] >= betas[:-1]).all()  # noise is added ever faster
    abar = alphas_cumprod(betas)
    assert (abar[1:] < abar[:-1]).all() and abar[0] < 1


def test_cosine_clips_at_0999() -> None:
    betas = betas_for("cosine", 2000)
    assert betas[-1].item() == 0.999  # unclipped 1 - f(T)/f(T-1) = 1 since f(T) = cos^2(pi/2) = 0
    assert betas[:-10].max().item() < 0.999


def test_linear_quadratic_sigmoid_endpoints() -> None:
    lin = betas_for("linear", 1000)
    assert lin[0].item() == pytest.approx(1e-4) and lin[-1].item() == pytest.approx(0.02)
    lin2 = betas_for("linear", 2000)  # endpoints scaled by 1000/T
    assert lin2[0].item() == pytest.approx(5e-5) and lin2[-1].item() == pytest.approx(0.01)
    # the scaling keeps the final signal level about the same for any T
    assert alphas_cumprod(lin2)[-1].item() == pytest.approx(alphas_cumprod(lin)[-1].item(), rel=0.05)
    assert betas_for("linear", 10)[-1].item() == 0.999  # 0.02 * 100 clipped
    quad = betas_for("quadratic", 2000)
    assert quad[0].item() == pytest.approx(1e-4) and quad[-1].item() == pytest.approx(0.02)
    assert quad[1000].item() == pytest.approx((0.01 + (math.sqrt(0.02) - 0.01) * 1000 / 1999) ** 2)
    sig = betas_for("sigmoid", 2000)
    assert 1e-4 < sig[0].item() < 2e-4 and 0.0199 < sig[-1].item() < 0.02
    assert sig[1000].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / (1 + math.exp(-6 / 1999)))


@pytest.mark.parametrize("name, T", [("cosin", 10), ("cosine", 0), ("linear", -3), ("cosine", 2.5)])
def test_schedule_errors(name: str, T: int) -> None:
    with pytest.raises(ValueError, match="schedule|T must be"):
        betas_for(name, T)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ forward process
def test_q_sample_statistics() -> None:
    abar = alphas_cumprod(betas_for("cosine", 1000)).float()
    g = torch.Generator().manual_seed(0)
    x0 = torch.linspace(-1, 1, 8).reshape(1, 2, 2, 2)
    n = 20000
    for t_val in (0, 300, 700, 999):
        t = torch.full((n,), t_val)
        noise = torch.randn((n, 2, 2, 2), generator=g)
        xt = q_sample(x0.expand(n, -1, -1, -1), t, noise, abar)
        a = abar[t_val]
        # mean sqrt(abar) x0, std sqrt(1 - abar); tolerance ~ 5 standard errors of 20000 draws
        torch.testing.assert_close(xt.mean(0), a.sqrt() * x0[0], atol=0.04, rtol=0)
        torch.testing.assert_close(xt.std(0), (1 - a).sqrt().expand(2, 2, 2), atol=0.03, rtol=0)


def _oracle(x0: torch.Tensor, cond: torch.Tensor, abar: torch.Tensor, prediction: str):  # noqa: ANN202
    """A perfect denoiser for data that is the single point x0: it recovers eps from x_t exactly."""

    def net(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = x0.shape[1]
        assert x_in.shape[1] == c + cond.shape[1]
        assert torch.equal(x_in[:, c:], cond)  # the condition is concatenated after x_t
        x_t = x_in[:, :c]
        a = abar.to(x_t)[t.to(torch.long)].reshape(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return {"epsilon": eps, "v": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0.expand_as(x_t)}[prediction]

    return net


@pytest.mark.parametrize("prediction", ["epsilon", "v", "sample"])
@pytest.mark.parametrize("loss", ["smooth_l1", "mse", "l1"])
def test_diffusion_loss_is_zero_for_the_oracle(prediction: str, loss: str) -> None:
    abar = alphas_cumprod(betas_for("cosine", 100)).float()
    x0 = torch.rand(3, 2, 4, 4) * 2 - 1
    cond = torch.rand(3, 1, 4, 4)
    g = torch.Generator().manual_seed(1)
    value = diffusion_loss(
        _oracle(x0, cond, abar, prediction),
        x0,
        cond,
        alphas_cumprod=abar,
        prediction=prediction,
        loss=loss,
        generator=g,
    )  # type: ignore[arg-type]
    assert value.ndim == 0 and value.item() < 1e-6
    # a wrong network gets a clearly positive loss
    zero = diffusion_loss(
        lambda x, t: torch.zeros_like(x0), x0, cond, alphas_cumprod=abar, prediction=prediction, loss=loss
    )  # type: ignore[arg-type]
    assert zero.item() > 1e-2


def test_v_target_closed_form() -> None:
    abar = torch.tensor([0.25, 0.64])
    x0, eps = torch.ones(2, 1, 1, 1), torch.full((2, 1, 1, 1), 2.0)
    v = prediction_target(x0, torch.tensor([0, 1]), eps, abar, "v")
    assert v.flatten().tolist() == pytest.approx([0.5 * 2 - math.sqrt(0.75), 0.8 * 2 - 0.6])


def test_diffusion_loss_errors() -> None:
    abar = alphas_cumprod(betas_for("cosine", 10)).float()
    x0, cond = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="prediction"):
        diffusion_loss(lambda x, t: x, x0, cond, alphas_cumprod=abar, prediction="x0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss"):
        diffusion_loss(lambda x, t: x, x0, cond, alphas_cumprod=abar, loss="huber")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cond"):
        diffusion_loss(lambda x, t: x, x0, torch.zeros(1, 1, 2, 2), alphas_cumprod=abar)


# -------------------------------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("prediction", ["epsilon", "v", "sample"])
def test_clip_output_clips_implied_x0(prediction: str) -> None:
    abar = torch.tensor(0.3)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    out = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 3
    clipped = _clip_output(out, x, abar, prediction)  # type: ignore[arg-type]
    a, s = abar.sqrt(), (1 - abar).sqrt()
    to_x0 = {"epsilon": lambda o: (x - s * o) / a, "v": lambda o: a * x - s * o, "sample": lambda o: o}[prediction]
    torch.testing.assert_close(to_x0(clipped), to_x0(out).clamp(-1, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("prediction", ["epsilon", "v", "sample"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
def test_samplers_recover_a_point_mass(sampler: str, prediction: str) -> None:
    # With the exact denoiser of a one-point data set every sampler must land on that point; this checks the
    # parameterisation mapping to diffusers and the concatenation order end to end.
    betas = betas_for("cosine", 20)
    abar = alphas_cumprod(betas).float()
    x0 = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
    cond = torch.rand(1, 1, 4, 4)
    out = sample(
        _oracle(x0, cond, abar, prediction),
        cond,
        (1, 2, 4, 4),
        betas=betas,
        sampler=sampler,  # type: ignore[arg-type]
        steps=5,
        prediction=prediction,
        clip_denoised=True,
        generator=torch.Generator().manual_seed(0),
    )  # type: ignore[arg-type]
    torch.testing.assert_close(out, x0, atol=2e-3, rtol=0)


def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return UNET_PRESETS["tiny"](3, 2, 8).eval()


def _run(sampler: str, seed: int, eta: float = 0.0, net: torch.nn.Module | None = None) -> torch.Tensor:
    net = net or _tiny_net()
    cond = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    with torch.no_grad():
        return sample(
            lambda x, t: net(x, t).sample,
            cond,
            (1, 2, 8, 8),
            betas=betas_for("cosine", 20),
            sampler=sampler,
            steps=4,
            eta=eta,
            generator=torch.Generator().manual_seed(seed),
        )  # type: ignore[arg-type]


# Golden values: the mean of one draw from a tiny UNet initialised with torch.manual_seed(0), seed 0, cosine
# T=20 truncated at log-SNR -5.1 (19 steps), 4 steps (ddpm: all 19). They pin the current behaviour (scheduler
# wiring, noise order, seeding) so
# that an unintended change shows up; they say nothing about sample quality (the network is untrained).
GOLDEN_MEAN = {"ddpm": 0.057493050990160555, "ddim": 0.02215011286898516, "dpmpp": -0.04822050093207508}


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
def test_sampler_golden_values(sampler: str) -> None:
    out = _run(sampler, seed=0)
    assert out.shape == (1, 2, 8, 8) and torch.isfinite(out).all()
    assert out.double().mean().item() == pytest.approx(GOLDEN_MEAN[sampler], abs=1e-5)


def test_ddim_eta0_is_bit_reproducible() -> None:
    net = _tiny_net()
    assert torch.equal(_run("ddim", seed=0, net=net), _run("ddim", seed=0, net=net))
    assert torch.equal(_run("ddim", seed=5, eta=0.5, net=net), _run("ddim", seed=5, eta=0.5, net=net))
    assert not torch.equal(_run("ddim", seed=5, eta=0.5, net=net), _run("ddim", seed=5, eta=1.0, net=net))


def test_ddpm_seed_controls_the_draw() -> None:
    net = _tiny_net()
    a, b, c = _run("ddpm", 1, net=net), _run("ddpm", 1, net=net), _run("ddpm", 2, net=net)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sampler": "euler"}, "unknown sampler"),
        ({"steps": 0}, "steps must be"),
        ({"steps": 21}, "exceeds"),
        ({"sampler": "dpmpp", "eta": 0.5}, "only applies to the ddim"),
        ({"sampler": "ddim", "eta": -1.0}, "eta must be"),
        ({"prediction": "x0"}, "unknown prediction"),
    ],
)
def test_sample_errors(kwargs: dict, match: str) -> None:
    cond = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=match):
        sample(lambda x, t: x[:, :1], cond, (1, 1, 4, 4), betas=betas_for("cosine", 20), **{"steps": 4, **kwargs})


def test_sample_cond_shape_error() -> None:
    cond = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="cond must be"):
        sample(lambda x, t: x[:, :1], cond, (1, 1, 8, 8), betas=betas_for("cosine", 20), steps=4)


def test_unet_presets_shapes_and_sizes() -> None:
    torch.manual_seed(0)
    tiny = UNET_PRESETS["tiny"](4, 3, 8)
    assert tiny(torch.zeros(2, 4, 8, 8), torch.tensor([0, 7])).sample.shape == (2, 3, 8, 8)
    assert 100_000 < count_parameters(tiny) < 300_000
    assert set(UNET_PRESETS) == {"tiny", "compact", "small", "base"}
    compact = UNET_PRESETS["compact"](7, 3, 16)  # latent SR: z_t (3) ++ LR (1) ++ z(bicubic LR) (3)
    assert compact(torch.zeros(1, 7, 16, 16), torch.tensor([5])).sample.shape == (1, 3, 16, 16)
    assert 2_000_000 < count_parameters(compact) < 3_500_000  # < 7 MB in fp16: fits a shipped model


def test_chain_truncated_at_min_log_snr() -> None:
    # Cosine, T = 2000: abar(T-1) ~ 6e-10 (last beta clipped at 0.999); the sampler stops where log-SNR < -5.1.
    from ldsr.diffusion.sampling import truncate_betas

    betas = betas_for("cosine", 2000)
    kept = truncate_betas(betas, -5.1)
    abar = alphas_cumprod(betas)
    log_snr = 0.5 * torch.log(abar / (1 - abar))
    assert log_snr[len(kept) - 1] >= -5.1 > log_snr[len(kept)]
    assert 1900 < len(kept) < 2000
    torch.testing.assert_close(kept, betas[: len(kept)])
    with pytest.raises(ValueError, match="removes every step"):
        truncate_betas(betas, 20.0)
