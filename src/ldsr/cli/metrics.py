"""`ldsr metrics`: PSNR / SSIM / HFEN / GMSD / HF ratio of a folder of SR outputs against its ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def metrics(
    pred: Path = typer.Option(..., "--pred", help="Folder of SR outputs.", show_default=False),
    gt: Path = typer.Option(
        ..., "--gt", help="Folder of ground-truth images (same relative names).", show_default=False
    ),
    y_channel: bool = typer.Option(
        True, "--y-channel/--rgb", help="Measure BT.601 luma (the SR-paper protocol) or all colour channels."
    ),
    scale: int = typer.Option(4, "--scale", min=1, help="SR factor; the default crop border."),
    crop_border: Optional[int] = typer.Option(
        None, "--crop-border", min=0, help="Pixels removed from each side before measuring.", show_default="the scale"
    ),
    data_range: Optional[float] = typer.Option(
        None,
        "--data-range",
        help="Peak-to-peak value range (255, 65535, ...).",
        show_default="from the gt bit depth: 255 for 8-bit, 65535 for 16-bit",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for metrics.csv and metrics.json.", show_default="print only, write nothing"
    ),
    ssim_map: Optional[Path] = typer.Option(
        None, "--ssim-map", help="Folder for one SSIM heat-map PNG per image.", show_default="none"
    ),
    std: Optional[Path] = typer.Option(
        None,
        "--std",
        help="Folder of predicted std maps (<name>_std.png from `ldsr upscale --std-map`): adds calibration, "
        "the share of pixels whose error exceeds 3x the predicted std.",
        show_default="none",
    ),
) -> None:
    """Measure every prediction against its ground truth and print a table; --out also writes CSV and JSON.

    PSNR and SSIM; HFEN (LoG-filtered error norm), GMSD and the HF ratio (prediction over reference power above
    a quarter of Nyquist: 1 as sharp, < 1 blurry, > 1 noisy) punish blur. Lower HFEN and GMSD are better.
    """
    from ldsr.evaluation.metrics import format_table, metrics_folder

    border = scale if crop_border is None else crop_border
    try:
        result = metrics_folder(
            pred,
            gt,
            y_channel=y_channel,
            crop_border=border,
            data_range=data_range,
            out_dir=out,
            ssim_map_dir=ssim_map,
            std_dir=std,
        )
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    channel = "Y" if y_channel else "RGB"
    typer.echo(f"channel {channel}, crop border {border}")
    typer.echo(format_table(result.ok))
    typer.echo(result.summary())
    if out is not None:
        typer.echo(f"wrote {out / 'metrics.csv'} and {out / 'metrics.json'}")
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    app.command("metrics")(metrics)
