"""`ldsr study create | serve | results`: a blind rating study of `ldsr evaluate` outputs in the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

study_app = typer.Typer(
    name="study",
    help="Blind reader study of SR outputs (the thesis's Table 5.2): create, serve in the browser, analyse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(2)


@study_app.command("create")
def create(
    report: Path = typer.Argument(
        ..., help="Output folder of `ldsr evaluate` (results.csv, summary.json, sr/).", show_default=False
    ),
    out: Path = typer.Option(..., "--out", "-o", help="New (or empty) study folder.", show_default=False),
    images: Optional[int] = typer.Option(
        None, "--images", min=1, help="Images drawn at random.", show_default="all images with every method's output"
    ),
    methods: Optional[list[str]] = typer.Option(
        None,
        "--methods",
        help="Methods to rate: a,b or the option repeated.",
        show_default="every method of the report",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the image draw and of every rater's order."),
    raters: int = typer.Option(20, "--raters", min=1, help="Rater places: one order and one invitation code each."),
    repeats: Optional[int] = typer.Option(
        None, "--repeats", min=0, help="Trials shown twice to each rater.", show_default="10 % of the trials"
    ),
    gt: Optional[Path] = typer.Option(
        None,
        "--gt",
        help="Ground-truth folder, if moved since the evaluation.",
        show_default="the report's provenance gt_dir",
    ),
) -> None:
    """Pick images and methods from an evaluate report, hide them behind opaque ids, randomise every order."""
    from ldsr.study import create_study

    chosen = [m.strip() for item in methods or [] for m in item.split(",") if m.strip()] or None
    try:
        study = create_study(report, out, n_images=images, seed=seed, methods=chosen, raters=raters,
                             repeats=repeats, gt_dir=gt)  # fmt: skip
    except ValueError as e:
        raise _fail(e) from e
    n_images, n_methods, n_trials = len(study.images), len(study.methods), len(study.trials)
    typer.echo(f"study {study.study_id}: {n_images} images x {n_methods} methods = {n_trials} trials + "
               f"{study.doc['repeats']} repeats per rater, {study.n_raters} rater places -> {out}")  # fmt: skip
    typer.echo("invitation codes (one per rater; needed when the server is not on localhost):")
    for code in study.codes:
        typer.echo(f"  {code}")


@study_app.command("serve")
def serve(
    study: Path = typer.Argument(..., help="Study folder from `ldsr study create`.", show_default=False),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; off loopback, codes are required."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port)."),
    threads: int = typer.Option(4, "--threads", min=1, help="Server threads."),
    require_code: bool = typer.Option(False, "--require-code", help="Invitation codes even on localhost."),
) -> None:
    """Serve the rating page; ratings go to <study>/ratings.sqlite, each committed when given."""
    try:
        from ldsr.study.serve import serve as run
    except ModuleNotFoundError as e:
        typer.echo(f"error: {e.name} is missing; install the study extra: pip install 'ldsr[study]'", err=True)
        raise typer.Exit(2) from e
    try:
        run(study, host=host, port=port, threads=threads, require_code=require_code)
    except (ValueError, OSError) as e:
        raise _fail(e) from e


@study_app.command("results")
def results(
    study: Path = typer.Argument(..., help="Study folder.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder.", show_default="<study>/results"),
    boot: int = typer.Option(2000, "--boot", min=1, help="Bootstrap draws of the 95 % intervals."),
    join: bool = typer.Option(True, "--join/--no-join", help="Show evaluate's PSNR/SSIM beside the scores."),
) -> None:
    """Table 5.2: UP share and mean score per method (95 % CIs), agreement, consistency; MD, CSV, figure."""
    from ldsr.study.results import markdown, study_results

    try:
        loaded, res, paths = study_results(study, out, n_boot=boot, join=join)
    except ValueError as e:
        raise _fail(e) from e
    typer.echo(markdown(loaded, res, join=join))
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")
