"""Folder jobs: run one function per file, report each failure on one line, go on, fail at the end."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchResult(Generic[R]):
    """Results of the files that worked and `(name, reason)` of those that did not."""

    ok: list[R] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{len(self.ok)} succeeded, {len(self.failures)} failed"]
        lines += [f"  FAILED {name}: {reason}" for name, reason in self.failures]
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def run_batch(
    items: Sequence[T],
    fn: Callable[[T], R],
    *,
    desc: str = "files",
    name: Callable[[T], str] = str,
    progress: bool = True,
    quiet: bool = False,
) -> BatchResult[R]:
    """Apply `fn` to every item; a `ValueError` or `OSError` is recorded and the batch goes on.

    Each failure is printed to stderr as it happens ("error: <name>: <reason>") unless `quiet`; it is
    always in `BatchResult.failures` (and `summary()`), for callers that report at the end instead.
    """
    result: BatchResult[R] = BatchResult()
    for item in tqdm(items, desc=desc, disable=not progress or not sys.stderr.isatty(), leave=False):
        try:
            result.ok.append(fn(item))
        except (ValueError, OSError) as e:
            # ImageError messages already start with the path; others get it prefixed.
            reason = str(e)
            label = name(item)
            if reason.startswith(label + ": "):
                reason = reason[len(label) + 2 :]
            if not quiet:
                print(f"error: {label}: {reason}", file=sys.stderr)
            result.failures.append((label, reason))
    return result
