"""Generation measures (ldsr.evaluation.generation) and feature spaces (ldsr.evaluation.features) on toy cases
with known answers: identical sets, shifted sets, copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ldsr.evaluation.features import (
    FIDInceptionV3,
    StatsProjection,
    load_feature_net,
    load_inception,
    save_feature_net,
    train_feature_net,
)
from ldsr.evaluation.generation import (
    evaluate_generation,
    frechet_distance,
    image_grid,
    intensity_wasserstein,
    kid_subsets,
    near_copy_mask,
    nearest_neighbours,
    pixel_vectors,
    precision_recall_masks,
)
from ldsr.io import read_image

ROOT = Path(__file__).resolve().parents[1]
MRI = ROOT / "fixtures" / "mri"
HISTO = ROOT / "fixtures" / "histology"


def gaussian(n: int = 400, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def test_frechet_identical_zero_and_shift_exact() -> None:
    x = gaussian()
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    delta = np.full(8, 0.5)
    # equal covariances: the distance is exactly ||delta||^2 = 8 * 0.25
    assert frechet_distance(x, x + delta) == pytest.approx(2.0, rel=1e-6)
    # a wider set: Tr(S1 + S2 - 2 (S1 S2)^1/2) = 8 (1 + 4 - 4) for N(0, I) vs N(0, 4I); sample noise ~ 10 %
    y = 2.0 * gaussian(4000, 8, 1)
    assert frechet_distance(gaussian(4000, 8, 2), y) == pytest.approx(8.0, rel=0.15)
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(x, x[:, :4])


def test_kid_unbiased_near_zero_and_grows_with_shift() -> None:
    a, b = gaussian(400, 8, 0), gaussian(400, 8, 1)  # two draws of one distribution
    same = kid_subsets(a, b, subsets=20, subset_size=100)
    assert same.shape == (20,) and abs(same.mean()) < 3 * same.std() / np.sqrt(20) + 1e-3
    shifted = kid_subsets(a, b + 1.0, subsets=20, subset_size=100)
    assert shifted.mean() > 50 * max(abs(same.mean()), 1e-4)


def test_precision_recall_known_cases() -> None:
    real = gaussian(300, 4, 0)
    p, r = precision_recall_masks(real, gaussian(300, 4, 1))
    assert p.mean() > 0.9 and r.mean() > 0.9  # same distribution
    p, r = precision_recall_masks(real, gaussian(300, 4, 1) + 20.0)
    assert p.mean() == 0 and r.mean() == 0  # disjoint
    collapsed = real[:1] + 0.01 * gaussian(300, 4, 2)  # mode collapse onto one real sample
    p, r = precision_recall_masks(real, collapsed)
    assert p.mean() == 1.0 and r.mean() < 0.05
    with pytest.raises(ValueError, match="k must be"):
        precision_recall_masks(real[:3], real[:3], k=3)


def test_nearest_neighbours_and_near_copies() -> None:
    train = [np.random.default_rng(i).random((64, 64, 1)).astype(np.float32) for i in range(6)]
    copies = [np.clip(train[i] + 0.003, 0, 1) for i in (4, 1, 2)]
    idx, dist = nearest_neighbours(pixel_vectors(copies), pixel_vectors(train))
    assert idx.tolist() == [4, 1, 2]
    assert near_copy_mask(dist).mean() == 1.0  # copies: near-copy share 1
    fresh = [np.random.default_rng(100 + i).random((64, 64, 1)).astype(np.float32) for i in range(3)]
    _, dist = nearest_neighbours(pixel_vectors(fresh), pixel_vectors(train))
    assert near_copy_mask(dist).mean() == 0.0


def test_intensity_wasserstein_identical_and_shift() -> None:
    imgs = [np.random.default_rng(i).uniform(0.2, 0.7, (16, 16, 1)) for i in range(4)]
    assert intensity_wasserstein(imgs, imgs) == pytest.approx([0.0])
    assert intensity_wasserstein(imgs, [a + 0.1 for a in imgs]) == pytest.approx([0.1])
    rgb = [np.repeat(a, 3, axis=2) for a in imgs]
    assert intensity_wasserstein(rgb, [a + 0.05 for a in rgb]) == pytest.approx([0.05] * 3)
    with pytest.raises(ValueError, match="channel"):
        intensity_wasserstein(imgs, rgb)


def fixture_images(folder: Path) -> list[np.ndarray]:
    return [read_image(p)[0] for p in sorted(folder.iterdir())]


def test_stats_projection_deterministic_and_separates_domains() -> None:
    mri, histo = fixture_images(MRI), fixture_images(HISTO)
    space = StatsProjection()
    a, b = space(mri), StatsProjection()(mri)
    assert a.shape == (len(mri), 256)
    np.testing.assert_array_equal(a, b)  # the same fixed projection in every instance
    grey = mri[0][:, :, :1]
    np.testing.assert_allclose(space([grey]), space([np.repeat(grey, 3, axis=2)]))  # grey == grey as RGB
    within = np.linalg.norm(a[:, None] - a[None], axis=2).mean()
    across = np.linalg.norm(a[:, None] - space(histo)[None], axis=2).mean()
    assert across > 1.5 * within


def test_feature_net_trains_saves_and_loads(tmp_path: Path) -> None:
    imgs = fixture_images(MRI) + fixture_images(HISTO)
    net, losses = train_feature_net(imgs, steps=25, batch=9, lr=3e-3, width=8, dim=32)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # the contrastive loss falls
    path = save_feature_net(tmp_path / "feat.safetensors", net, name="ldsr-feat-test", version="1",
                            info={"trained_on": "fixtures", "steps": 25})  # fmt: skip
    space = load_feature_net(path)
    assert (space.name, space.version) == ("ldsr-feat-test", "1") and "fixtures" in space.description
    np.testing.assert_allclose(space(imgs[:3]), space(imgs[:3]))
    assert space(imgs[:3]).shape == (3, 32)
    with pytest.raises(ValueError, match="not an ldsr feature network"):
        inception_file = tmp_path / "other.safetensors"
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(inception_file))
        load_feature_net(inception_file)


def test_inception_shapes_and_load_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    net = FIDInceptionV3().eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 2048)  # resized to 299 inside
    n_params = sum(p.numel() for p in net.parameters())
    assert 21_700_000 < n_params < 21_900_000  # pt_inception without fc: 21.79M
    with pytest.raises(ValueError, match="file not found"):
        load_inception(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors: not a safetensors file"):
        load_inception(junk)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("Mixed_7c")}, str(partial))
    with pytest.raises(ValueError, match="tensors missing, e.g. Mixed_7c"):
        load_inception(partial)
    bad = dict(state)
    bad["Conv2d_1a_3x3.conv.weight"] = torch.zeros(32, 1, 3, 3)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"Conv2d_1a_3x3.conv.weight has shape \(32, 1, 3, 3\)"):
        load_inception(tmp_path / "bad.safetensors")
    good = tmp_path / "good.safetensors"
    save_file({**state, "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, str(good))
    assert load_inception(good).version == "pt_inception-2015-12-05"


def test_evaluate_generation_folders(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    shutil.copytree(MRI, fake)  # "samples" that are copies of the training images
    (fake / "broken.png").write_bytes(b"not a png")
    (fake / "generation_run.json").write_text(json.dumps({"model": "toy", "seconds_per_sample": 0.5}))
    report = evaluate_generation(MRI, fake, tmp_path / "out", train_dir=MRI, spaces=[StatsProjection()])
    space = report.spaces["ldsr-rpstats"]
    assert space["frechet"] == pytest.approx(0.0, abs=1e-6) and space["precision"] == 1.0
    assert report.intensity_w1 == pytest.approx([0.0])
    assert report.memorisation is not None and report.memorisation["near_copy_share"] == 1.0
    assert len(report.skipped) == 1 and "broken.png" in report.skipped[0]
    for name in ("generation.json", "generation.md", "nearest.csv", "closest_pairs.png"):
        assert (tmp_path / "out" / name).is_file()
    md = (tmp_path / "out" / "generation.md").read_text()
    assert "ldsr-rpstats v1" in md and "seconds_per_sample 0.5" in md and "near-copy share 1.000" in md


def test_image_grid_layout() -> None:
    g = image_grid([np.full((4, 4, 1), i / 5) for i in range(5)], pad=1)
    assert g.shape == (9, 14, 1)  # 3 columns x 2 rows
    assert g[5, 0, 0] == pytest.approx(0.6) and g[8, 13, 0] == 1.0  # 4th image; blank cell is white
