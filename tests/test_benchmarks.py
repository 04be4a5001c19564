"""docs/BENCHMARKS.md: its result tables are rendered from the stored evaluation summaries, not typed by hand."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENDER = runpy.run_path(str(ROOT / "experiments" / "render_benchmarks.py"))


def _run(folder: Path, rows: dict[str, list[tuple[float, float]]]) -> None:
    """A minimal `ldsr evaluate` output: summary.json, results.csv (per image) and machine.json."""
    folder.mkdir(parents=True)
    lines = ["# provenance line", "method,image,psnr_y,ssim_y"]
    methods = []
    for m, vals in rows.items():
        lines += [f"{m},img{i}.png,{p},{s}" for i, (p, s) in enumerate(vals)]
        n = len(vals)
        methods.append({"method": m, "psnr_y": sum(p for p, _ in vals) / n, "ssim_y": sum(s for _, s in vals) / n,
                        "lr_psnr": 40.0, "hfen_y": 0.5, "hf_ratio_y": 0.9, "seconds_per_image": 0.01})  # fmt: skip
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    prov = {"n_images": 3, "scale": 4, "command": "ldsr evaluate ...", "device": "cpu",
            "date": "2026-11-30T00:00:00+00:00"}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps({"provenance": prov, "methods": methods}))
    (folder / "machine.json").write_text(json.dumps({"cpus": 2, "processor": "test CPU"}))


def test_table_numbers_come_from_the_summary(tmp_path: Path) -> None:
    _run(tmp_path / "res" / "set", {"bicubic": [(30.0, 0.8), (31.0, 0.9), (32.0, 0.7)],
                                    "mri_x4": [(31.0, 0.85), (31.5, 0.9), (33.0, 0.8)]})  # fmt: skip
    doc = "intro\n<!-- results:set -->\nstale\n<!-- /results -->\nend\n"
    out = RENDER["render"](doc, tmp_path / "res")
    assert "stale" not in out and out.startswith("intro\n") and out.endswith("end\n")
    row = next(line for line in out.splitlines() if line.startswith("| mri-x4 blind fine-tune"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "31.83" and cells[2] == "0.8500"  # means of the three images
    # paired differences 1.0, 0.5, 1.0: mean 0.83, standard error 0.17, higher on 3 of 3
    assert cells[3] == "+0.83 ± 0.17 (3/3)"
    assert "2-core test CPU" in out and "2026-11-30" in out


def test_committed_benchmarks_match_their_summaries() -> None:
    doc = ROOT / "docs" / "BENCHMARKS.md"
    text = doc.read_text()
    assert RENDER["render"](text, ROOT / "docs" / "results") == text, "run experiments/render_benchmarks.py"


def test_colorization_table_says_whether_the_shipped_model_has_the_lowest_delta_e(tmp_path: Path) -> None:
    folder = tmp_path / "colorize"
    folder.mkdir()
    de = {"diffusion-latent": [5.0, 7.0, 6.0], "regression": [4.0, 6.0, 6.5], "grey": [17.0, 18.0, 16.0]}
    lines = ["image,method,delta_e2000"] + [f"im{i}.png,{m},{v}" for m, vs in de.items() for i, v in enumerate(vs)]
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    common = {"psnr": 25.0, "ssim": 0.9, "colourfulness_ratio": 0.7, "luminance_max_err": 1e-14, "params": 10,
              "seconds": 0.5, "images": 3}  # fmt: skip
    methods = {m: {**common, "delta_e2000": sum(v) / 3} for m, v in de.items()}
    (folder / "summary.json").write_text(json.dumps({"methods": methods}))
    (folder / "machine.json").write_text(json.dumps({"cpus": 2, "processor": "test CPU"}))
    run = {"shipped": "diffusion-latent", "trained": ["diffusion-latent", "regression"], "train_command": "t",
           "eval_command": "e", "device": "cpu", "date": "2026-12-01T00:00:00+00:00"}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(run))
    out = RENDER["render"]("<!-- colorization:colorize -->\n<!-- /colorization -->\n", tmp_path)
    row = next(line for line in out.splitlines() if line.startswith("| regression"))
    assert row.split("|")[5].strip() == "-0.50 ± 0.50 (1/3)"  # paired differences -1, -1, +0.5
    assert "misses the lowest ΔE2000 of the trained methods (regression) by 0.50" in out
    assert "| **diffusion-latent** (shipped) | 25.00 | 0.9000 | 6.00 | / |" in out and "2026-12-01" in out


def test_bench_table_numbers_come_from_the_summary(tmp_path: Path) -> None:
    """A `bench:` block (experiments/tiling/upscale_bench.py's summary): one row per output size, then the model,
    command, machine and date."""
    folder = tmp_path / "res" / "upscale_bench"
    folder.mkdir(parents=True)
    rows = [
        {"output": 1024, "seconds": 20.4, "seconds_per_mp": 19.46, "peak_rss_mb": 812.3, "source": "cmd a"},
        {"output": 4096, "seconds": 330.0, "seconds_per_mp": 19.67, "peak_rss_mb": 1650.6, "source": "cmd b"},
    ]
    summary = {"model": "mri-x4", "rows": rows, "command": "upscale_bench.py --sizes 1024", "date": "2026-12-01",
               "machine": "2-core CPU, OMP_NUM_THREADS=1"}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    out = RENDER["render"]("<!-- bench:upscale_bench -->\nstale\n<!-- /bench -->\n", tmp_path / "res")
    assert "stale" not in out
    assert "| 1024² | 20.4 | 19.5 | 812 | `cmd a` |" in out and "| 4096² | 330.0 | 19.7 | 1651 | `cmd b` |" in out
    assert "upscale_bench.py --sizes 1024" in out and "2-core CPU" in out and "2026-12-01" in out


def _gen_report(frechet: float, kid: float, copies: float | None, run: dict | None) -> dict:
    space = {"space": "ldsr-feat-mri", "version": "1", "frechet": frechet, "kid": kid, "precision": 0.5,
             "recall": 0.25}  # fmt: skip
    mem = {"near_copy_share": copies} if copies is not None else None
    return {"spaces": {"ldsr-feat-mri": space}, "intensity_w1": [0.0123], "memorisation": mem, "run": run,
            "n_real": 276, "n_fake": 100}  # fmt: skip


def test_generation_table_numbers_and_verdict_come_from_the_reports(tmp_path: Path) -> None:
    """A `generation:` block: one row per report in run.json's order, the shipped row marked, and the sentence
    on shipped vs GAN computed from the reports (it flips when the GAN is closer)."""
    folder = tmp_path / "res" / "gen"
    folder.mkdir(parents=True)
    dm = {"sampler": "dpmpp", "steps": 20, "nfe": 20, "parameters": 2.5e6, "seconds_per_sample": 0.31,
          "peak_memory_mb": 400.0}  # fmt: skip
    gan = {"sampler": None, "steps": None, "nfe": 1, "parameters": 3.1e6, "seconds_per_sample": 0.002,
           "peak_memory_mb": 300.0}  # fmt: skip
    run = {"rows": {"gan": {"label": "GAN", "steps": 900, "minutes": 30}, "vq": {"label": "VQ-DDPM", "steps": 1400,
           "minutes": 30}}, "shipped": "vq", "baseline": "gan", "train_command": "cpu.sh train", "eval_command":
           "cpu.sh eval", "device": "cpu", "date": "2026-12-01T04:00:00"}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "machine.json").write_text(json.dumps({"cpus": 2, "processor": "test CPU"}))
    (folder / "gan.json").write_text(json.dumps(_gen_report(80.0, 0.05, 0.0, gan)))
    (folder / "vq.json").write_text(json.dumps(_gen_report(20.0, 0.01, 0.02, dm)))
    out = RENDER["render"]("<!-- generation:gen -->\nstale\n<!-- /generation -->\n", tmp_path / "res")
    assert "stale" not in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| GAN | 900 steps, 30 min | one pass | 100 | 80 | 50 |")
    assert rows[2].startswith(
        "| **VQ-DDPM** (shipped) | 1400 steps, 30 min | dpmpp 20 (20) | 100 | 20 | 10 | 0.50 | 0.25 |"
    )
    assert "2.0 %" in rows[2] and "0.31" in rows[2]
    assert "is closer to the held-out images than the GAN" in out and "276 held-out" in out and "2026-12-01" in out
    (folder / "gan.json").write_text(json.dumps(_gen_report(10.0, 0.005, 0.0, gan)))
    out = RENDER["render"]("<!-- generation:gen -->\n<!-- /generation -->\n", tmp_path / "res")
    assert "is NOT closer to the held-out images than the GAN" in out
