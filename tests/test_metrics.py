"""PSNR / SSIM agree with scikit-image on real fixture images; edge cases; heat maps; the `ldsr metrics` CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldsr.evaluation import metrics as M
from ldsr.evaluation.heatmap import save_ssim_heatmap

skm = pytest.importorskip("skimage.metrics", reason="agreement tests need scikit-image (pip install scikit-image)")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GREY = [FIXTURES / "mri" / "figshare_0_1840.jpg", FIXTURES / "mri" / "colin27_z141.png"]
RGB = [FIXTURES / "histology" / "cmu1sr_y2700_x0900.png", FIXTURES / "histology" / "kather2016_86_label_5_150.png"]


def load_u8(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def bicubic_x4(img: np.ndarray) -> np.ndarray:
    """Down x4 then up x4 with PIL bicubic, per channel in float mode, back to the input's integer dtype."""
    info = np.iinfo(img.dtype)
    h, w = img.shape[:2]
    chans = img[:, :, None] if img.ndim == 2 else img
    out = []
    for c in range(chans.shape[2]):
        im = Image.fromarray(chans[:, :, c].astype(np.float32), mode="F")
        im = im.resize((w // 4, h // 4), Image.BICUBIC).resize((w, h), Image.BICUBIC)
        out.append(np.asarray(im))
    res = np.clip(np.round(np.stack(out, axis=2)), info.min, info.max).astype(img.dtype)
    return res[:, :, 0] if img.ndim == 2 else res


def sk_ssim(gt: np.ndarray, pred: np.ndarray, data_range: float) -> float:
    return skm.structural_similarity(
        gt,
        pred,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=2 if gt.ndim == 3 else None,
    )


def dicom_u16() -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(FIXTURES / "dicom" / "MR_small.dcm")
    raw = np.asarray(ds.pixel_array)
    assert raw.min() >= 0  # signed storage, non-negative values: the uint16 view is the same numbers
    return raw.astype(np.uint16)


# ---------------------------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("path", GREY + RGB, ids=lambda p: p.name)
def test_psnr_and_ssim_match_skimage_8bit(path: Path) -> None:
    gt = load_u8(path)
    pred = bicubic_x4(gt)
    assert not np.array_equal(gt, pred)
    p = M.psnr(pred, gt, data_range=255)
    assert p == pytest.approx(skm.peak_signal_noise_ratio(gt, pred, data_range=255), abs=1e-6)
    assert 15 < p < 50
    s = M.ssim(pred, gt, data_range=255)
    assert s == pytest.approx(sk_ssim(gt, pred, 255), abs=1e-6)
    assert 0.2 < s < 1.0


def test_psnr_and_ssim_match_skimage_16bit() -> None:
    gt = dicom_u16()
    assert gt.dtype == np.uint16 and gt.max() > 255  # real 16-bit MR data
    pred = bicubic_x4(gt)
    p = M.psnr(pred, gt, data_range=65535)
    assert p == pytest.approx(skm.peak_signal_noise_ratio(gt, pred, data_range=65535), abs=1e-6)
    assert M.ssim(pred, gt, data_range=65535) == pytest.approx(sk_ssim(gt, pred, 65535), abs=1e-6)


def test_float_data_range_1_matches_8bit_units() -> None:
    gt = load_u8(RGB[1])
    pred = bicubic_x4(gt)
    p8 = M.psnr(pred, gt, data_range=255, y_channel=True, crop_border=4)
    p1 = M.psnr(pred / 255.0, gt / 255.0, data_range=1.0, y_channel=True, crop_border=4)
    assert p1 == pytest.approx(p8, abs=1e-9)
    s8 = M.ssim(pred, gt, data_range=255, y_channel=True, crop_border=4)
    s1 = M.ssim(pred / 255.0, gt / 255.0, data_range=1.0, y_channel=True, crop_border=4)
    assert s1 == pytest.approx(s8, abs=1e-9)


def test_y_channel_matches_skimage_on_manual_luma() -> None:
    gt = load_u8(RGB[0])
    pred = bicubic_x4(gt)

    def luma(x: np.ndarray) -> np.ndarray:
        r, g, b = (x[:, :, i].astype(np.float64) / 255.0 for i in range(3))
        return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b

    gy, py = luma(gt)[4:-4, 4:-4], luma(pred)[4:-4, 4:-4]
    kw = dict(data_range=255, crop_border=4, y_channel=True)
    assert M.psnr(pred, gt, **kw) == pytest.approx(skm.peak_signal_noise_ratio(gy, py, data_range=255), abs=1e-6)
    assert M.ssim(pred, gt, **kw) == pytest.approx(sk_ssim(gy, py, 255), abs=1e-6)


# ----------------------------------------------------------------------------------------------- edge cases


def test_rgb_to_y_white_black_and_units() -> None:
    white = np.full((2, 2, 3), 255, dtype=np.uint8)
    black = np.zeros((2, 2, 3), dtype=np.uint8)
    assert M.rgb_to_y(white, data_range=255) == pytest.approx(235.0)
    assert M.rgb_to_y(black, data_range=255) == pytest.approx(16.0)
    assert M.rgb_to_y(np.ones((2, 2, 3)), data_range=1.0) == pytest.approx(235.0 / 255.0)
    assert M.rgb_to_y(np.full((1, 1, 3), 65535.0), data_range=65535) == pytest.approx(235.0 * 257.0)
    assert M.rgb_to_y(white, data_range=255).shape == (2, 2, 1)
    grey = np.arange(12.0).reshape(3, 4)
    assert M.rgb_to_y(grey, data_range=255) is grey


def test_identical_images_give_inf_and_one() -> None:
    for img in (load_u8(GREY[1]), load_u8(RGB[0])):
        assert M.psnr(img, img, data_range=255) == math.inf
        assert abs(M.ssim(img, img, data_range=255) - 1.0) <= 1e-12
        assert abs(M.ssim(img, img, data_range=255, y_channel=True, crop_border=4) - 1.0) <= 1e-12


def test_shape_mismatch_names_both_shapes() -> None:
    a, b = np.zeros((20, 20, 3)), np.zeros((20, 21, 3))
    with pytest.raises(ValueError, match=r"\(20, 20, 3\).*\(20, 21, 3\)"):
        M.psnr(a, b, data_range=1.0)
    with pytest.raises(ValueError, match="shape"):
        M.ssim(a, b, data_range=1.0)


def test_crop_border_equals_manual_crop_and_shrinks_map() -> None:
    gt = load_u8(GREY[1])
    pred = bicubic_x4(gt)
    b = 6
    assert M.psnr(pred, gt, data_range=255, crop_border=b) == pytest.approx(
        M.psnr(pred[b:-b, b:-b], gt[b:-b, b:-b], data_range=255), abs=1e-12
    )
    assert M.psnr(pred, gt, data_range=255, crop_border=b) != pytest.approx(M.psnr(pred, gt, data_range=255))
    smap = M.ssim_map(pred, gt, data_range=255, crop_border=b)
    h, w = gt.shape
    assert smap.shape == (h - 2 * b - 10, w - 2 * b - 10)
    assert float(smap.mean()) == pytest.approx(M.ssim(pred, gt, data_range=255, crop_border=b), abs=1e-15)
    assert M.squared_error_map(pred, gt, data_range=255, crop_border=b).shape == (h - 2 * b, w - 2 * b)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="crop border"):
            M.crop(gt, bad)  # type: ignore[arg-type]


def test_channel_rules_for_y() -> None:
    rng = np.random.default_rng(0)
    one = rng.random((16, 16, 1))
    one_b = rng.random((16, 16, 1))
    assert M.psnr(one, one_b, data_range=1, y_channel=True) == M.psnr(one, one_b, data_range=1)
    for c in (2, 4):
        x = rng.random((16, 16, c))
        with pytest.raises(ValueError, match=f"{c} channels"):
            M.psnr(x, x, data_range=1.0, y_channel=True)


def test_invalid_inputs_raise() -> None:
    x = np.zeros((16, 16))
    bad = x.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.psnr(bad, x, data_range=1.0)
    with pytest.raises(ValueError, match="NaN"):
        M.ssim(x, bad, data_range=1.0)
    for dr in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="data_range"):
            M.psnr(x, x, data_range=dr)
    with pytest.raises(ValueError, match="11x11"):
        M.ssim(np.zeros((10, 30)), np.zeros((10, 30)), data_range=1.0)
    with pytest.raises(ValueError, match="11x11"):
        M.ssim(x, x, data_range=1.0, crop_border=3)  # 16 - 6 = 10 < 11


def test_quantize_rounds_like_matlab() -> None:
    x = np.array([0.0, 0.5 / 255, 1.49 / 255, 1.5 / 255, 1.0, 1.2, -0.1])
    assert M.quantize(x, 8).tolist() == [0, 1, 1, 2, 255, 255, 0]
    assert M.quantize(x, 8).dtype == np.uint8
    assert M.quantize(np.array([1.0, 0.5]), 16).tolist() == [65535, 32768]
    with pytest.raises(ValueError, match="bit_depth"):
        M.quantize(x, 12)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ heat map


def test_heatmap_png_low_ssim_is_red(tmp_path: Path) -> None:
    smap = np.ones((100, 160))
    smap[:50, :80] = 0.0  # top-left quadrant: no similarity
    out = save_ssim_heatmap(smap, tmp_path / "sub" / "map.png", title="test")
    assert out.exists() and not list(out.parent.glob(".*.tmp*"))
    png = np.asarray(Image.open(out).convert("RGB")).astype(int)
    h, w = png.shape[:2]
    assert 200 <= w <= 2000 and 150 <= h <= 2000
    r, g, b = png[..., 0], png[..., 1], png[..., 2]
    red = (r > 120) & (g < 60) & (b < 90)
    blue = (b > 120) & (r < 90) & (g < 110)
    assert red.sum() > 0.03 * h * w and blue.sum() > 3 * red.sum() * 0.8
    ry, rx = np.argwhere(red).mean(axis=0)
    by, bx = np.argwhere(blue).mean(axis=0)
    assert rx < bx and ry < by  # the red block sits top-left of the blue bulk
    with pytest.raises(ValueError, match="shape"):
        save_ssim_heatmap(np.ones((3, 3, 3)), tmp_path / "bad.png")


# --------------------------------------------------------------------------------------------- folder + CLI


def make_pair_folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """gt = two fixtures copied as they are; pred = bicubic-degraded copies saved as PNG with the same stem."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    pairs = {}
    for src in (GREY[0], RGB[0]):  # a JPEG and a PNG ground truth; predictions are PNG
        (gt_dir / src.name).write_bytes(src.read_bytes())
        gt = load_u8(src)
        pred = bicubic_x4(gt)
        Image.fromarray(pred).save(pred_dir / f"{src.stem}.png")
        pairs[f"{src.stem}.png"] = (pred, gt)
    return pred_dir, gt_dir, pairs


def read_csv(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    prov = dict(line[2:].split(": ", 1) for line in lines if line.startswith("# ") and not line.startswith("# failed"))
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    return prov, rows


PROVENANCE_KEYS = {
    "channel",
    "crop_border",
    "data_range",
    "ssim_window",
    "ssim_k1",
    "ssim_k2",
    "ldsr_version",
    "pred_dir",
    "gt_dir",
    "date",
}


def test_cli_metrics_numbers_provenance_and_missing_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ldsr.cli import app

    pred_dir, gt_dir, pairs = make_pair_folders(tmp_path)
    out, maps = tmp_path / "out", tmp_path / "maps"
    runner = CliRunner()
    res = runner.invoke(
        app, ["metrics", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out), "--ssim-map", str(maps)]
    )
    assert res.exit_code == 0, res.output
    assert "mean" in res.output

    prov, rows = read_csv(out / "metrics.csv")
    assert PROVENANCE_KEYS <= prov.keys()
    assert prov["channel"] == "y" and prov["crop_border"] == "4"
    doc = json.loads((out / "metrics.json").read_text())
    assert PROVENANCE_KEYS <= doc["provenance"].keys()
    by_name = {r["name"]: r for r in rows}
    json_by_name = {r["name"]: r for r in doc["images"]}
    assert set(by_name) == set(pairs) | {"mean"} and set(json_by_name) == set(pairs)
    for name, (pred, gt) in pairs.items():
        kw = dict(data_range=255, crop_border=4, y_channel=True)
        want_p, want_s = M.psnr(pred, gt, **kw), M.ssim(pred, gt, **kw)
        assert float(by_name[name]["psnr"]) == pytest.approx(want_p, abs=1e-9)
        assert float(by_name[name]["ssim"]) == pytest.approx(want_s, abs=1e-9)
        assert json_by_name[name]["psnr"] == pytest.approx(want_p, abs=1e-9)
        assert json_by_name[name]["ssim"] == pytest.approx(want_s, abs=1e-9)
        assert (maps / f"{Path(name).stem}_ssim.png").exists()
    assert doc["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in doc["images"]]))

    # A ground truth with no prediction: reported, exit 1, the others still measured.
    (gt_dir / "extra.png").write_bytes(RGB[1].read_bytes())
    res = runner.invoke(
        app, ["metrics", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out), "--rgb", "--crop-border", "0"]
    )
    assert res.exit_code == 1
    doc = json.loads((out / "metrics.json").read_text())
    assert [f["name"] for f in doc["failures"]] == ["extra.png"]
    assert {r["name"] for r in doc["images"]} == set(pairs)
    assert doc["provenance"]["channel"] == "rgb" and doc["provenance"]["crop_border"] == 0
    name = f"{RGB[0].stem}.png"
    pred, gt = pairs[name]
    got = {r["name"]: r for r in doc["images"]}[name]
    assert got["psnr"] == pytest.approx(M.psnr(pred, gt, data_range=255), abs=1e-9)


def test_metrics_folder_16bit_data_range_from_bit_depth(tmp_path: Path) -> None:
    gt = dicom_u16()
    pred = bicubic_x4(gt)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    Image.fromarray(gt).save(tmp_path / "gt" / "mr.png")
    Image.fromarray(pred).save(tmp_path / "pred" / "mr.png")
    result = M.metrics_folder(
        tmp_path / "pred",
        tmp_path / "gt",
        y_channel=True,
        crop_border=2,
        data_range=None,
        out_dir=tmp_path / "out",
        progress=False,
    )
    assert result.exit_code == 0 and len(result.ok) == 1
    score = result.ok[0]
    assert score.data_range == 65535.0
    assert score.psnr == pytest.approx(M.psnr(pred, gt, data_range=65535, crop_border=2), abs=1e-9)
    assert score.ssim == pytest.approx(M.ssim(pred, gt, data_range=65535, crop_border=2), abs=1e-9)


def test_help_shows_defaults() -> None:
    from typer.testing import CliRunner

    from ldsr.cli import app

    res = CliRunner().invoke(app, ["metrics", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for text in ("y-channel", "default: 4", "the scale", "gt bit depth", "print only, write nothing"):
        assert text in res.output, text


def test_metrics_folder_pairs_by_stem_and_reports_orphans(tmp_path: Path) -> None:
    pred_dir, gt_dir, pairs = make_pair_folders(tmp_path)
    # A prediction without ground truth, and a stem with two ground-truth files: both are per-file failures.
    Image.fromarray(load_u8(RGB[1])).save(pred_dir / "orphan.png")
    Image.fromarray(load_u8(RGB[1])).save(pred_dir / "twice.png")
    Image.fromarray(load_u8(RGB[1])).save(gt_dir / "twice.png")
    (gt_dir / "twice.tif").write_bytes((gt_dir / "twice.png").read_bytes())
    result = M.metrics_folder(
        pred_dir, gt_dir, y_channel=False, crop_border=0, data_range=255.0, out_dir=tmp_path / "out", progress=False
    )
    assert result.exit_code == 1
    reasons = dict(result.failures)
    assert set(reasons) == {"orphan.png", "twice.png"}
    assert "no ground truth" in reasons["orphan.png"] and "several" in reasons["twice.png"]
    assert {s.name for s in result.ok} == set(pairs)  # the JPEG gt matched its PNG prediction
    with pytest.raises(ValueError, match="does not exist"):
        M.metrics_folder(
            tmp_path / "nope",
            gt_dir,
            y_channel=False,
            crop_border=0,
            data_range=None,
            out_dir=tmp_path / "out",
            progress=False,
        )


def test_stored_grid_gives_back_the_file_integers() -> None:
    from ldsr.io import read_image

    x, meta = read_image(FIXTURES / "dicom" / "MR_small.dcm")  # signed 16-bit DICOM
    grid = M.stored_grid(meta)
    assert grid.integer and grid.peak == 65535.0
    assert np.array_equal(M._on_grid(x, grid)[:, :, 0], dicom_u16().astype(np.int16).astype(np.float64))
    x8, meta8 = read_image(GREY[0])
    assert M.stored_grid(meta8).span == M.stored_grid(meta8).peak == 255.0
    assert np.array_equal(M._on_grid(x8, M.stored_grid(meta8))[:, :, 0], load_u8(GREY[0]))


def test_finer_prediction_is_quantised_to_the_gt_grid(tmp_path: Path) -> None:
    gt = load_u8(GREY[1])
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    Image.fromarray(gt).save(tmp_path / "gt" / "a.png")
    # 16-bit prediction within 0.4 grey levels of the 8-bit gt: on the gt's grid it is the gt itself.
    Image.fromarray((gt.astype(np.uint16) * 257 + 100).astype(np.uint16)).save(tmp_path / "pred" / "a.png")
    result = M.metrics_folder(
        tmp_path / "pred",
        tmp_path / "gt",
        y_channel=True,
        crop_border=0,
        data_range=None,
        out_dir=tmp_path / "out",
        progress=False,
    )
    assert result.exit_code == 0
    assert result.ok[0].psnr == math.inf and result.ok[0].data_range == 255.0
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["images"][0]["psnr"] == "inf" and doc["mean"]["psnr"] == "inf"


def test_metrics_folder_dicom_measures_stored_integers(tmp_path: Path) -> None:
    from ldsr.io import read_image

    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "mr.dcm").write_bytes((FIXTURES / "dicom" / "MR_small.dcm").read_bytes())
    # An SR output saved as 16-bit PNG holds x in the gt's DICOM window; on the gt grid it is the gt's integers.
    x_gt, _ = read_image(FIXTURES / "dicom" / "MR_small.dcm")
    Image.fromarray(M.quantize(x_gt[:, :, 0], 16)).save(tmp_path / "pred" / "sr.png")
    Image.fromarray(M.quantize(np.clip(x_gt[:, :, 0] + 0.01, 0, 1), 16)).save(tmp_path / "pred" / "off.png")
    (tmp_path / "gt" / "off.dcm").write_bytes((FIXTURES / "dicom" / "MR_small.dcm").read_bytes())
    (tmp_path / "gt" / "sr.dcm").write_bytes((FIXTURES / "dicom" / "MR_small.dcm").read_bytes())
    result = M.metrics_folder(
        tmp_path / "pred",
        tmp_path / "gt",
        y_channel=False,
        crop_border=0,
        data_range=None,
        out_dir=tmp_path / "out",
        progress=False,
    )
    assert result.exit_code == 0, result.failures
    scores = {s.name: s for s in result.ok}
    assert scores["mr.dcm"].psnr == math.inf and scores["mr.dcm"].data_range == 65535.0
    assert scores["sr.png"].psnr == math.inf
    window = float(dicom_u16().max() - dicom_u16().min())  # x = 0.01 of the window, in stored units
    assert 20 * math.log10(65535 / (0.01 * window)) - 1 < scores["off.png"].psnr < math.inf


# ---------------------------------------------------------------------------------------- sharpness measures


def _grey_fixture() -> np.ndarray:
    """The central 96x96 of a real MRI slice, float64 in 0..255."""
    g = load_u8(GREY[0]).astype(np.float64)
    g = g if g.ndim == 2 else g[:, :, 0]
    h, w = g.shape
    return g[h // 2 - 48 : h // 2 + 48, w // 2 - 48 : w // 2 + 48]


def test_blur_and_noise_move_the_sharpness_measures_the_right_way() -> None:
    from scipy import ndimage

    hr = _grey_fixture()
    blurred = ndimage.gaussian_filter(hr, 1.2)
    noised = np.clip(hr + np.random.default_rng(0).normal(0.0, 8.0, hr.shape), 0, 255)
    kw = dict(data_range=255.0)
    assert M.hfen(hr, hr, **kw) == 0.0 and M.gmsd(hr, hr, **kw) == 0.0
    assert M.hf_energy_ratio(hr, hr, **kw) == pytest.approx(1.0, abs=1e-12)
    # Blur: HF energy well below the reference's, HFEN and GMSD up.
    assert M.hf_energy_ratio(blurred, hr, **kw) < 0.5
    assert M.hfen(blurred, hr, **kw) > 0.2 and M.gmsd(blurred, hr, **kw) > 0.005
    # Noise: HF energy above the reference's, HFEN and GMSD up.
    assert M.hf_energy_ratio(noised, hr, **kw) > 1.2
    assert M.hfen(noised, hr, **kw) > 0.2 and M.gmsd(noised, hr, **kw) > 0.005
    # A stronger blur is worse on every measure.
    more = ndimage.gaussian_filter(hr, 2.5)
    assert M.hf_energy_ratio(more, hr, **kw) < M.hf_energy_ratio(blurred, hr, **kw)
    assert M.hfen(more, hr, **kw) > M.hfen(blurred, hr, **kw)
    assert M.gmsd(more, hr, **kw) > M.gmsd(blurred, hr, **kw)


def test_sharpness_maps_shapes_and_exact_cases() -> None:
    hr = _grey_fixture()[:40, :30]
    kw = dict(data_range=255.0)
    assert M.hfen_map(hr, hr, **kw).shape == (26, 16)  # valid region of the 15x15 LoG
    assert M.gms_map(hr, hr, **kw).shape == (20, 15)
    assert M.hf_energy_map(hr, hr, **kw).shape == (40, 30)
    # The LoG sums to zero: an offset changes nothing; twice the image doubles the LoG, so HFEN is exactly 1.
    assert M.log_kernel().sum() == pytest.approx(0.0, abs=1e-15)
    assert M.hfen(hr + 7.0, hr, **kw) == pytest.approx(0.0, abs=1e-9)
    assert M.hfen(2.0 * hr, hr, **kw) == pytest.approx(1.0, abs=1e-12)
    # The HF ratio is a power ratio: a * image + b has a^2 times the power (means are removed).
    assert M.hf_energy_ratio(2.0 * hr + 3.0, hr, **kw) == pytest.approx(4.0, rel=1e-12)
    assert M.hf_energy_ratio(0.5 * hr, hr, **kw) == pytest.approx(0.25, rel=1e-12)
    # GMS is 1 where both gradients agree, and T scales with data_range^2: 0..255 and [0, 1] agree.
    np.testing.assert_allclose(M.gms_map(hr, hr, **kw), 1.0)
    noisy = hr + np.random.default_rng(1).normal(0, 5, hr.shape)
    assert M.gmsd(noisy / 255, hr / 255, data_range=1.0) == pytest.approx(M.gmsd(noisy, hr, **kw), rel=1e-9)
    flat = np.full((20, 20), 3.0)
    assert math.isnan(M.hfen(hr[:20, :20], flat, **kw)) and math.isnan(M.hf_energy_ratio(hr[:20, :20], flat, **kw))
    with pytest.raises(ValueError, match="at least 15x15"):
        M.hfen_map(hr[:14], hr[:14], **kw)


def _gmsd_reference(x: np.ndarray, y: np.ndarray) -> float:
    """The authors' MATLAB GMSD.m, line by line with scipy's convolve2d (0..255 images)."""
    from scipy.signal import convolve2d

    def same2(a: np.ndarray) -> np.ndarray:  # conv2(a, ones(2)/4, 'same') keeps rows/cols 2..end of 'full'
        return convolve2d(a, np.full((2, 2), 0.25), mode="full")[1:, 1:]

    dx = np.array([[1, 0, -1]] * 3) / 3.0
    maps = []
    for a in (x, y):
        a = same2(a)[0::2, 0::2]
        ix, iy = convolve2d(a, dx, mode="same"), convolve2d(a, dx.T, mode="same")
        maps.append(np.sqrt(ix**2 + iy**2))
    q = (2 * maps[0] * maps[1] + 170.0) / (maps[0] ** 2 + maps[1] ** 2 + 170.0)
    return float(np.std(q, ddof=1))


def _hfen_reference(x: np.ndarray, y: np.ndarray) -> float:
    """fspecial('log', 15, 1.5) by its formula, correlation by explicit windows, valid region."""
    r = np.arange(15) - 7.0
    xx, yy = np.meshgrid(r, r)
    g = np.exp(-(xx**2 + yy**2) / 4.5)
    g /= g.sum()
    h = g * (xx**2 + yy**2 - 4.5) / 1.5**4
    h -= h.mean()
    lx = np.array(
        [[np.sum(x[i : i + 15, j : j + 15] * h) for j in range(x.shape[1] - 14)] for i in range(x.shape[0] - 14)]
    )
    ly = np.array(
        [[np.sum(y[i : i + 15, j : j + 15] * h) for j in range(y.shape[1] - 14)] for i in range(y.shape[0] - 14)]
    )
    return float(np.linalg.norm(lx - ly) / np.linalg.norm(ly))


def test_golden_values_on_a_tiny_case() -> None:
    i, j = np.mgrid[0:17, 0:18].astype(np.float64)
    gt = 128 + 60 * np.sin(i / 2.0) * np.cos(j / 3.0)  # (17, 18): odd height exercises GMSD's zero padding
    pred = gt + 10 * np.cos(i + 2 * j)
    assert M.gmsd(pred, gt, data_range=255) == pytest.approx(_gmsd_reference(pred, gt), rel=1e-12)
    assert M.hfen(pred, gt, data_range=255) == pytest.approx(_hfen_reference(pred, gt), rel=1e-9)
    # Frozen values (computed once by the references above; they guard against silent changes).
    assert M.gmsd(pred, gt, data_range=255) == pytest.approx(1.91279600e-4, rel=1e-6)
    assert M.hfen(pred, gt, data_range=255) == pytest.approx(1.33851790e-2, rel=1e-6)
    assert M.hf_energy_ratio(pred, gt, data_range=255) == pytest.approx(1.13290541, rel=1e-6)


def test_calibration_counts_errors_beyond_three_std() -> None:
    gt = np.zeros((4, 4))
    pred = np.zeros((4, 4))
    pred[0, :] = [0.1, 0.31, 0.29, -0.5]  # |error| vs 3 x 0.1: out, out, in, out
    std = np.full((4, 4), 0.1)
    cmap = M.calibration_map(pred, gt, std, data_range=1.0)
    np.testing.assert_array_equal(cmap[0], [0.0, 1.0, 0.0, 1.0])
    assert float(cmap.mean()) == 2 / 16
    assert float(M.calibration_map(pred, gt, std, data_range=1.0, k=1.0).mean()) == 3 / 16
    # a per-channel std on RGB: the map is the share of channels outside their band
    rgb = np.zeros((2, 2, 3))
    err = rgb.copy()
    err[0, 0] = [1.0, 0.0, 1.0]
    assert M.calibration_map(err, rgb, np.full((2, 2, 3), 0.1), data_range=1.0)[0, 0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="predicted std has shape"):
        M.calibration_map(pred, gt, np.ones((3, 3)), data_range=1.0)
    with pytest.raises(ValueError, match="negative"):
        M.calibration_map(pred, gt, -std, data_range=1.0)


def test_cli_metrics_without_out_writes_nothing_and_shows_new_columns(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from ldsr.cli import app

    (tmp_path / "in").mkdir()
    pred_dir, gt_dir, pairs = make_pair_folders(tmp_path / "in")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    res = CliRunner().invoke(app, ["metrics", "--pred", str(pred_dir), "--gt", str(gt_dir)])
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert "wrote" not in res.output
    head = next(line for line in res.output.splitlines() if line.startswith("image"))
    for col in ("PSNR (dB)", "SSIM", "HFEN", "GMSD", "HF ratio"):
        assert col in head
    assert ">3 std" not in head  # calibration only with --std
    name = next(iter(pairs))
    pred, gt = pairs[name]
    row = next(line for line in res.output.splitlines() if line.startswith(name)).split()
    want = M.hfen(pred, gt, data_range=255, crop_border=4, y_channel=True)
    assert float(row[3]) == pytest.approx(want, abs=1e-4)


def test_metrics_folder_calibration_from_std_maps(tmp_path: Path) -> None:
    pred_dir, gt_dir, pairs = make_pair_folders(tmp_path)
    std_dir = tmp_path / "std"
    for name, (pred, _) in pairs.items():
        # std maps as `ldsr upscale --std-map` writes them: 2 x std of [0, 1] images, 8-bit.
        std = np.full(pred.shape, 40, np.uint8)  # 40/255/2 of full scale: 20 grey levels of 0..255
        out = std_dir / Path(name).parent / f"{Path(name).stem}_std.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(std).save(out)
    res = M.metrics_folder(
        pred_dir, gt_dir, y_channel=True, crop_border=4, data_range=None, out_dir=tmp_path / "o", std_dir=std_dir,
        progress=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.failures
    for s in res.ok:
        pred, gt = pairs[s.name]
        want = np.mean(np.abs(pred.astype(float) - gt.astype(float))[4:-4, 4:-4] > 3 * 20.0)
        assert s.calibration == pytest.approx(want, abs=1e-12)
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert {"hfen", "gmsd", "hf_ratio", "calibration"} <= doc["images"][0].keys()
    assert "calibration" in doc["provenance"]
