"""Parameter helpers shared by the models and the training loop: counting and temporary freezing.

Torch is imported for type checking only: `ldsr.models.unets` re-exports `count_parameters` and is read
without torch by the CLI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of `module` (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@contextlib.contextmanager
def frozen(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Set ``requires_grad=False`` on `params` for the block, then restore each parameter's own flag.

    Autograd reads the flags when an op runs, so a graph built inside the block has no edges to these
    parameters (e.g. the discriminator in a generator step): a later backward never touches their grads."""
    params = list(params)
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
