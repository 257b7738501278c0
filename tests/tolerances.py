"""How close two float computations of one quantity must come: a tolerance derived from the dtype and the size of
the reductions, never a literal per test.

Bit-exact assertions (``torch.equal``, ``==`` on floats) are kept only where both sides are the *same* computation:
the same shapes through the same code path, so the same kernels add the same numbers in the same order — weights
restored after an edit, a cache read back, a deterministic rerun, a value derived from another by indexing. Two
*different* computations of the same number (a padded batch against one prompt, length-sorted batches against the
texts in order, running sums split over two threads, another CPU kernel) agree only up to rounding, and the bits
they agree on change from one CPU to the next (`.ci/run` runs the unit tests a second time on other kernels to
catch a bit-exact assumption that holds on one CPU only).

The bound. Reordering a sum of n terms changes it by at most about n·u·Σ|terms| (Higham's γₙ, u = eps/2 the unit
roundoff); both sides carry such an error, so 2·n·u = n·eps. A quantity that passes through ``steps`` reductions
one after another (the matrix products of a forward pass) carries ``steps`` times that. The error is measured
against the result's *scale*, its largest |entry|, not entry by entry: an entry that cancels to nearly zero still
carries the absolute error of the large terms it came from (C's off-diagonal entries, a key's small components).
This is the worst case; float32 rounding in practice stays one to two orders below it, and a real disagreement (a
wrong token, a wrong layer, a missing normalisation) lies orders above it (tests/test_tolerances.py shows both).
"""
from __future__ import annotations

import pytest
import torch

# v* is optimised by Adam, whose normalised steps amplify rounding in the loss (every step divides by the gradient's
# running norm): two float32 paths to v* agree to about 1e-5 relative after a few steps, not to a reduction's bound.
# Tests whose point is v*'s exact agreement run in float64 (tests/test_reference_parity.py).
V_STAR_FLOAT32 = 1e-4


def rounding(dtype: torch.dtype, terms: int, steps: int = 1) -> float:
    """Relative error (against the result's scale) that ``steps`` chained reductions of ``terms`` terms each, in
    ``dtype``, may show between two orders of evaluation: steps · terms · eps."""
    return steps * terms * torch.finfo(dtype).eps


def forward_rounding(bundle, layer: int | None = None) -> float:
    """The bound for a key read at ``layer`` (the input of its down-projection) or the projection's output there,
    by two different forward passes of ``bundle``: every block up to and including ``layer`` runs an attention and
    an MLP (two chained reductions each), the widest of width max(hidden, intermediate) — the edited projection's
    two dimensions."""
    layer = bundle.hparams.layer if layer is None else layer
    weight = bundle.weight(layer)
    return rounding(weight.dtype, max(weight.shape), steps=2 * (layer + 1))


def second_moment_rounding(bundle, n_tokens: int, layer: int | None = None) -> float:
    """The bound for C = Σ k kᵀ / n from keys read by two different forward passes and summed in float64: a key's
    relative error enters C twice (k kᵀ), the float64 sum over ``n_tokens`` adds its own."""
    return 2 * forward_rounding(bundle, layer) + rounding(torch.float64, n_tokens)


def assert_agree(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, msg: str | None = None) -> None:
    """``actual`` equals ``expected`` within ``tolerance`` of ``expected``'s scale (its largest |entry|), entry by
    entry: |a − e| ≤ tolerance · (|e| + max|e|)."""
    scale = expected.detach().abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance * scale, msg=msg)


def approx(expected: float, tolerance: float, scale: float = 1.0):
    """``pytest.approx`` for a number computed two ways: within ``tolerance`` of it or of its ``scale`` (1 for the
    scale-free denominator ratio, which is 1 when the keys agree)."""
    return pytest.approx(expected, rel=tolerance, abs=tolerance * scale)
