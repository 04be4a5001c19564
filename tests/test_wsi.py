"""Whole-slide images (issue 15): region reading from SVS / pyramidal TIFF, the streamed pyramid writer, and a
region upscaled chunk by chunk into a pyramid that reads back with its levels and pixel size."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from ldsr.cli import app
from ldsr.data.resize import imresize
from ldsr.io import ImageError, read_image
from ldsr.io.meta import quantize
from ldsr.io.wsi import Slide, level_sizes, to_unit, write_pyramid
from ldsr.pipeline import load
from ldsr.pipeline.regions import blend_weights, parse_region, splits, upscale_region

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "histology"
NAMES = ["cmu1sr_y2700_x0900.png", "cmu1sr_y2700_x1200.png", "kather2016_82_label_2_150.png",
         "kather2016_86_label_5_150.png"]  # fmt: skip
MPP = 0.5  # um per pixel of the test slide's level 0


def _mosaic() -> np.ndarray:
    """(300, 300, 3) uint8: the four 150 x 150 H&E fixtures in a 2 x 2 mosaic."""
    ims = [quantize(read_image(FIX / n)[0], 8) for n in NAMES]
    return np.concatenate([np.concatenate(ims[:2], axis=1), np.concatenate(ims[2:], axis=1)], axis=0)


def _slide(path: Path, compression: str = "zlib") -> np.ndarray:
    """A two-level pyramidal TIFF as QuPath / bfconvert write them (64 x 64 tiles, level 1 as a SubIFD, pixel size
    in the resolution tags), made with tifffile alone; returns level 0."""
    img = _mosaic()
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        kw = dict(tile=(64, 64), photometric="rgb", compression=compression, resolutionunit="CENTIMETER", metadata=None)
        tw.write(img, subifds=1, resolution=(1e4 / MPP, 1e4 / MPP), **kw)
        tw.write(np.ascontiguousarray(img[::2, ::2]), subfiletype=1, resolution=(1e4 / (2 * MPP),) * 2, **kw)
    return img


# --- reading ------------------------------------------------------------------------------------------------


def test_region_read_decodes_only_what_it_needs_and_matches_the_level(tmp_path: Path) -> None:
    img = _slide(tmp_path / "s.tif")
    with Slide(tmp_path / "s.tif") as s:
        assert [(lv.width, lv.height) for lv in s.info.levels] == [(300, 300), (150, 150)]
        assert s.info.mpp == pytest.approx((MPP, MPP)) and s.info.level_mpp(1) == pytest.approx((2 * MPP, 2 * MPP))
        np.testing.assert_array_equal(s.read_region(37, 61, 130, 77), img[61:138, 37:167])  # across tile edges
        np.testing.assert_array_equal(s.read_region(10, 20, 100, 90, level=1), img[::2, ::2][20:110, 10:110])
        with pytest.raises(ValueError, match=r"not inside level 0 \(300 x 300 pixels\)"):
            s.read_region(250, 0, 100, 10)
        with pytest.raises(ValueError, match=r"level 2 does not exist \(the slide has levels 0..1\)"):
            s.read_region(0, 0, 10, 10, level=2)


def test_svs_jpeg_tiles_and_mpp_from_the_description(tmp_path: Path) -> None:
    """An Aperio-style file: JPEG tiles, a thumbnail page between the levels, MPP in the ImageDescription."""
    img = _mosaic()
    head = "Aperio Image Library v12.0.15 \r\n300x300 [0,0 300x300] (64x64) JPEG/RGB Q=90"
    with tifffile.TiffWriter(tmp_path / "s.svs") as tw:
        kw = dict(photometric="rgb", metadata=None)
        tw.write(img, tile=(64, 64), compression="jpeg", description=f"{head}|AppMag = 20|MPP = 0.2520", **kw)
        tw.write(np.ascontiguousarray(img[::8, ::8]), description=f"{head} -> 38x38 - ", **kw)  # thumbnail
        tw.write(np.ascontiguousarray(img[::4, ::4]), tile=(64, 64), compression="jpeg", description=head, **kw)
    with Slide(tmp_path / "s.svs") as s:
        assert s.info.vendor == "svs" and len(s.info.levels) == 2
        assert s.info.mpp == pytest.approx((0.252, 0.252)) and s.info.level_mpp(1) == pytest.approx((1.008, 1.008))
        region = s.read_region(30, 40, 200, 150)
    with tifffile.TiffFile(tmp_path / "s.svs") as tf:
        whole = tf.pages[0].asarray()  # tifffile's decode of the whole page
    np.testing.assert_array_equal(region, whole[40:190, 30:230])  # JPEG tiles (imagecodecs), only those needed
    assert np.abs(region.astype(np.float64) - img[40:190, 30:230]).mean() < 8  # JPEG quality 75 losses


def test_striped_tiff_and_its_inch_resolution(tmp_path: Path) -> None:
    img = _mosaic()
    tifffile.imwrite(tmp_path / "s.tif", img, rowsperstrip=37, photometric="rgb", resolution=(50800, 50800),
                     resolutionunit="INCH")  # fmt: skip
    with Slide(tmp_path / "s.tif") as s:
        assert s.info.mpp == pytest.approx((0.5, 0.5))  # 25400 um / 50800 pixels per inch
        np.testing.assert_array_equal(s.read_region(5, 30, 200, 100), img[30:130, 5:205])


def test_not_a_slide_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.tif"
    bad.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(ImageError, match=r"x.tif: "):
        Slide(bad)


# --- writing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["pages", "subifds"])
def test_pyramid_writer_levels_tiles_and_resolution(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65536, (700, 531, 1), dtype=np.uint16)  # 16-bit grey, odd sides
    bands = (img[y : y + 100] for y in range(0, 700, 100))  # a generator: consumed as the file is written
    sizes = write_pyramid(tmp_path / "p.tif", bands, img.shape, "uint16", mpp=(0.25, 0.3), layout=layout,  # type: ignore[arg-type]
                          min_side=200)  # fmt: skip
    assert sizes == level_sizes(700, 531, 200) == [(700, 531), (350, 266), (175, 133)]
    with tifffile.TiffFile(tmp_path / "p.tif") as tf:
        assert tf.is_bigtiff
        levels = tf.series[0].levels
        assert [lv.shape[:2] for lv in levels] == sizes
        pages = [lv.keyframe for lv in levels]
        assert all(p.is_tiled and (p.tilewidth, p.tilelength) == (256, 256) for p in pages)
        assert [p.subfiletype for p in pages] == [0, 1, 1]
        assert len(tf.pages) == (3 if layout == "pages" else 1)
        np.testing.assert_array_equal(levels[0].asarray(), img[:, :, 0])
        # level 1: the 2x2 box mean, rounded half up; the odd last column repeats itself
        a = img[:, :, 0].astype(np.int64)
        a = np.concatenate([a, a[:, -1:]], axis=1)
        box = (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4
        np.testing.assert_array_equal(levels[1].asarray(), box)
    with Slide(tmp_path / "p.tif") as s:
        assert s.info.dtype == "uint16" and s.info.channels == 1
        assert [lv.mpp for lv in s.info.levels] == [pytest.approx((0.25 * f, 0.3 * f)) for f in (1, 2, 4)]
    assert [p.name for p in tmp_path.iterdir()] == ["p.tif"]  # no spool or temporary left


def test_pyramid_writer_refuses_bad_input_and_leaves_nothing(tmp_path: Path) -> None:
    img = np.zeros((300, 300, 3), np.uint8)
    with pytest.raises(ValueError, match="got 200 rows for a level of 300 rows"):
        write_pyramid(tmp_path / "p.tif", [img[:200]], img.shape, "uint8", mpp=None)
    with pytest.raises(ValueError, match="JPEG compression needs 8-bit"):
        write_pyramid(tmp_path / "p.tif", [img.astype(np.uint16)], img.shape, "uint16", mpp=None, compression="jpeg")
    assert not any(tmp_path.iterdir())


# --- a region upscaled chunk by chunk ------------------------------------------------------------------------


def test_chunks_and_blend_weights_partition_unity() -> None:
    assert splits(10, 4) == [(0, 3), (3, 7), (7, 10)] and splits(5, 8) == [(0, 5)]
    n, half = 40, 4
    total = np.zeros(n)
    for c0, c1 in [(0, 13), (13, 27), (27, 40)]:
        lo, hi = max(c0 - half, 0), min(c1 + half, n)
        total[lo:hi] += blend_weights(lo, hi, (c0, c1), half, n)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert parse_region("1, 2,30,40") == (1, 2, 30, 40)
    with pytest.raises(ValueError, match="four integers"):
        parse_region("1,2,3")


def test_region_round_trip_bicubic_equals_direct_upscale(tmp_path: Path) -> None:
    """The must-show: a pyramidal TIFF made from fixtures, a region upscaled by chunks; the written pyramid reads
    back with its levels and pixel size, and level 0 is the direct x4 upscale of the same crop."""
    img = _slide(tmp_path / "s.tif")
    up = load("bicubic", scale=4)
    seen: list[tuple[int, int]] = []
    res = upscale_region(up, tmp_path / "s.tif", tmp_path / "o.tif", (20, 30, 250, 200), chunk=64, overlap=8,
                         min_level_side=256, on_chunk=lambda k, n: seen.append((k, n)))  # fmt: skip
    assert res.chunks == 16 and seen[-1] == (16, 16)  # 4 x 4 chunks of about 64 LR pixels
    assert res.levels == [(800, 1000), (400, 500), (200, 250)]
    with Slide(tmp_path / "o.tif") as s:
        assert [(lv.height, lv.width) for lv in s.info.levels] == res.levels
        assert [lv.mpp for lv in s.info.levels] == [pytest.approx((MPP / 4 * f,) * 2) for f in (1, 2, 4)]
        got = s.read_region(0, 0, 1000, 800).astype(np.int64)
    ref = quantize(imresize(img[30:230, 20:270].astype(np.float32) / 255, 4), 8).astype(np.int64)
    assert np.abs(got - ref).max() <= 1 and (got == ref).mean() > 0.999  # seams blended without a trace

    lvl1 = upscale_region(up, tmp_path / "s.tif", tmp_path / "o1.tif", (10, 10, 40, 40), level=1, overlap=4)
    assert lvl1.mpp == pytest.approx((2 * MPP / 4,) * 2) and lvl1.levels == [(160, 160)]  # level 1's pixel size / 4


def test_region_with_a_shipped_model_is_seamless(tmp_path: Path) -> None:
    """histology-x4 (1 step, 1 draw) on a 32 x 16 LR region in two chunks: consistent with its LR, close to the
    one-chunk result across the seam, and not a bicubic copy."""
    _slide(tmp_path / "s.tif")
    up = load("histology-x4")
    kw = dict(steps=1, samples=1, overlap=6)
    two = upscale_region(up, tmp_path / "s.tif", tmp_path / "a.tif", (100, 120, 32, 16), chunk=16, **kw)
    one = upscale_region(up, tmp_path / "s.tif", tmp_path / "b.tif", (100, 120, 32, 16), chunk=64, **kw)
    assert (two.chunks, one.chunks) == (2, 1) and two.shape == (64, 128, 3)
    with Slide(tmp_path / "a.tif") as a, Slide(tmp_path / "b.tif") as b, Slide(tmp_path / "s.tif") as s:
        x, y = to_unit(a.read_region(0, 0, 128, 64)), to_unit(b.read_region(0, 0, 128, 64))
        lr = to_unit(s.read_region(100, 120, 32, 16))

    def psnr(p: np.ndarray, q: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((p - q) ** 2)))

    assert psnr(imresize(x, size=(16, 32)), lr) > 30  # the output explains its LR
    assert psnr(x, y) > 30  # chunking changes little
    seam = np.abs(x - y)[:, 56:72].mean()  # around the chunk edge (LR column 16)
    assert seam < 2 * np.abs(x - y).mean() + 0.01
    assert psnr(x, np.clip(imresize(lr, 4), 0, 1)) < 60  # the network ran (not bicubic)


# --- the command -------------------------------------------------------------------------------------------


def test_cli_slide_region_checks_first_then_writes_the_pyramid(tmp_path: Path) -> None:
    _slide(tmp_path / "s.tif")

    def run(*args: object):  # noqa: ANN202 - click.testing.Result
        return CliRunner().invoke(app, ["upscale", "-i", str(tmp_path / "s.tif"), *map(str, args)])

    outside = run("-o", tmp_path / "o.tif", "--region", "100,100,250,10", "-m", "bicubic")
    assert outside.exit_code == 2 and "is not inside level 0 (300 x 300 pixels)" in outside.output
    wrong = run("-o", tmp_path / "o.png", "--region", "0,0,10,10", "-m", "bicubic")
    assert wrong.exit_code == 2 and "name a .tif or .tiff output file" in wrong.output
    bad = run("-o", tmp_path / "o.tif", "--region", "0,0,10", "-m", "bicubic")
    assert bad.exit_code == 2 and "--region: region must be four integers" in bad.output
    dry = run("-o", tmp_path / "o.tif", "--region", "0,0,100,50", "--level", "1", "-m", "bicubic", "--dry-run")
    assert dry.exit_code == 0 and "level 1 region 0,0,100,50" in dry.output and "0.25 um/pixel" in dry.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]  # nothing computed or written so far
    ok = run("-o", tmp_path / "o.tif", "--region", "0,0,100,50", "--level", "1", "-m", "bicubic", "--scale", "2")
    assert ok.exit_code == 0, ok.output
    with Slide(tmp_path / "o.tif") as s:
        assert (s.info.levels[0].width, s.info.levels[0].height) == (200, 100)
        assert s.info.mpp == pytest.approx((MPP, MPP))  # level 1 (1.0 um) / 2


def test_cli_tile_options_reach_the_upscaler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--tile N --tile-overlap M` (LR pixels, the Real-ESRGAN convention) are handed to the tiled sampler."""
    from ldsr.io import write_image
    from ldsr.pipeline.upscaler import Upscaler

    seen: dict[str, object] = {}
    real = Upscaler.upscale_batch

    @functools.wraps(real)  # keeps the signature the command inspects
    def spy(self: Upscaler, lrs: list[np.ndarray], **kw: object) -> object:
        seen.update(kw)
        return real(self, lrs, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Upscaler, "upscale_batch", spy)
    src = write_image(tmp_path / "a.png", _mosaic()[:32, :32])
    res = CliRunner().invoke(app, ["upscale", "-i", str(src), "-o", str(tmp_path / "b.png"), "-m", "histology-x4",
                                   "--steps", "1", "--draws", "1", "--tile", "16", "--tile-overlap", "4"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (seen["tile"], seen["tile_overlap"]) == (16, 4)
    bad = CliRunner().invoke(app, ["upscale", "-i", str(src), "-o", str(tmp_path / "c.png"), "--tile", "8",
                                   "--tile-overlap", "8"])  # fmt: skip
    assert bad.exit_code == 2 and "--tile-overlap must be smaller than --tile" in bad.output
