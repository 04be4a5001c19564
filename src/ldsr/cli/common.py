"""Option definitions shared by every `ldsr` command (one vocabulary), device checks and the job progress line.

Torch-free at import: `ldsr --help` imports this module. Each `*_option()` returns a fresh `typer.Option` so that
commands spell inputs, outputs, draws, seeds, steps, sampler, device, precision, `--quiet` and `--dry-run` the
same way and with the same help text.
"""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, NoReturn

import typer

from ldsr.diffusion.names import SAMPLERS


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Sampler(StrEnum):
    ddpm = "ddpm"
    ddim = "ddim"
    dpmpp = "dpmpp"


assert tuple(Sampler) == SAMPLERS, "Sampler choices must match ldsr.diffusion.names.SAMPLERS"

SAMPLER_HELP = (
    "Diffusion sampler: ddpm (ancestral, walks every step of the chain; slow), ddim (deterministic at eta 0), "
    "dpmpp (DPM-Solver++, the shipped models' default). Ignored by bicubic and CNN baselines."
)
STEPS_HELP = (
    "Sampler steps (ddpm ignores it and walks the whole chain). 1 gives the one-step estimate of E[HR | LR]; "
    "10+ gives a sharper single draw."
)
DRAWS_HELP = "Sampler draws per image, averaged into one SR image (posterior-mean estimate; diffusion models)."
SEEDS_HELP = "Repeated runs per image with seeds --seed + k, k < N; tables report mean ± std (diffusion models)."
DEVICE_HELP = "Where networks run: auto (cuda when available, else cpu), cpu or cuda."
PRECISION_HELP = "Inference precision: fp32, or bf16 / fp16 autocast on a GPU (bf16 also on a CPU, slowly)."


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: <message>` as one line on stderr and exit with `code` (2: usage, refused before any work)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def input_option(help: str, *aliases: str) -> Any:
    """`-i/--input` (required); `aliases` are older spellings kept working."""
    return typer.Option(..., "-i", "--input", *aliases, help=help, show_default=False)


def output_option(help: str, *aliases: str, default: Path | None = None) -> Any:
    """`-o/--output`; required unless `default` is given."""
    return typer.Option(... if default is None else default, "-o", "--output", *aliases, help=help)


def steps_option(show_default: str = "the model's sr.steps (shipped: 1)") -> Any:
    return typer.Option(None, "--steps", min=1, help=STEPS_HELP, show_default=show_default)


def sampler_option(show_default: str = "the model's sr.sampler (shipped: dpmpp)") -> Any:
    return typer.Option(None, "--sampler", help=SAMPLER_HELP, show_default=show_default)


def draws_option(*aliases: str, show_default: str = "the model's sr.samples (shipped: 8)") -> Any:
    return typer.Option(None, "--draws", *aliases, min=1, help=DRAWS_HELP, show_default=show_default)


def seeds_option(*aliases: str) -> Any:
    return typer.Option(1, "--seeds", *aliases, min=1, help=SEEDS_HELP)


def device_option() -> Any:
    return typer.Option(Device.auto, "--device", help=DEVICE_HELP)


def precision_option() -> Any:
    return typer.Option(Precision.fp32, "--precision", help=PRECISION_HELP)


def quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help="No progress bar or per-file lines; errors and totals only.")


def dry_run_option(what: str = "List what would be written, then exit without computing.") -> Any:
    return typer.Option(False, "--dry-run", help=what)


def resolve_device(device: Device | str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without one exits with a one-line error."""
    import torch

    choice = str(device)
    if choice == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if choice == "auto":
        return "cuda" if available else "cpu"
    if not available:
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        fail(f"--device {choice}: {why}; use --device cpu (or auto)")
    return choice


def check_precision(precision: Precision | str, device: str) -> None:
    """fp16 autocast needs a GPU; refuse it on a CPU before any work."""
    if str(precision) == "fp16" and not device.startswith("cuda"):
        fail("--precision fp16 needs --device cuda (a CPU runs fp32 or bf16)")


class JobProgress:
    """One progress display per job: a bar (images done, current stage, ETA) on a terminal, a line per finished
    image otherwise (logs; `log=False`: none), nothing but errors with `quiet`."""

    def __init__(
        self, total: int, *, desc: str, quiet: bool = False, log: bool = True, stream: IO[str] | None = None
    ) -> None:
        from tqdm import tqdm

        self.stream = stream if stream is not None else sys.stderr
        self.quiet, self.log = quiet, log
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.done_count, self.desc = total, 0, desc
        self.started = time.perf_counter()
        self.bar = tqdm(
            total=total, desc=desc, unit="img", file=self.stream, disable=quiet or not self.tty, dynamic_ncols=True
        )

    def stage(self, name: str) -> None:
        """Show the current stage (e.g. 'sampling 3/8', 'decoding', 'writing x.png') on the bar."""
        if not self.bar.disable:
            self.bar.set_postfix_str(name, refresh=True)

    def done(self, message: str, n: int = 1) -> None:
        """`n` images finished; `message` is the log line (non-terminal) for them."""
        self.done_count += n
        self.bar.update(n)
        if self.log and not self.quiet and not self.tty:
            elapsed = time.perf_counter() - self.started
            print(f"{self.desc} [{self.done_count}/{self.total}, {elapsed:.1f} s] {message}", file=self.stream)

    def error(self, message: str) -> None:
        """An error line, always shown (above the bar on a terminal)."""
        if self.bar.disable:
            print(f"error: {message}", file=self.stream)
        else:
            self.bar.write(f"error: {message}", file=self.stream)

    def note(self, message: str) -> None:
        """An informational line (what was chosen or converted); hidden by `quiet`."""
        if self.quiet:
            return
        if self.bar.disable:
            print(message, file=self.stream)
        else:
            self.bar.write(message, file=self.stream)

    def close(self) -> None:
        self.bar.close()
