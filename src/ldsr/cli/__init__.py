"""The `ldsr` command line. Each command group lives in its own module of this package and is registered here."""

from __future__ import annotations

import typer

from ldsr import __version__

app = typer.Typer(
    name="ldsr",
    help="Image super-resolution with latent diffusion models (medical and natural images).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the ldsr version and exit."
    ),
) -> None:
    """Image super-resolution with latent diffusion models (medical and natural images)."""


@app.command("version")
def version() -> None:
    """Print the ldsr version."""
    typer.echo(__version__)


def _register() -> None:
    # Commands are imported lazily per module so that `ldsr --help` stays fast and one broken optional
    # dependency cannot take the whole CLI down.
    import importlib

    for mod_name in ("degrade", "metrics", "bench", "train", "upscale", "evaluate", "study", "generate", "colorize"):
        try:
            mod = importlib.import_module(f"ldsr.cli.{mod_name}")
        except ModuleNotFoundError as e:
            if e.name == f"ldsr.cli.{mod_name}":
                continue
            raise
        mod.register(app)


_register()

if __name__ == "__main__":
    app()
