"""Sigmoid and tanh: piecewise polynomials on segments found by exact comparisons (the default).

sigmoid: degree-2 pieces on [-8, -5, -3.5, -2.5, -1.5, -0.75, 0, 0.75, 1.5, 2.5, 3.5, 5, 8],
0 below -8, 1 above 8; tanh: degree-2 pieces on 17 breakpoints in [-4.5, 4.5], -1 below and
1 above. Fit error 2.9e-4 and 2.5e-4; saturation error 3.4e-4 (sigmoid at 8) and 2.5e-4
(tanh at 4.5); valid for every representable input (the tails saturate, they never wrap).
Degree 2 with more pieces rather than degree 4 with fewer: a breakpoint costs a few ANDs
per element (ops.segments), a power a product of every element (docs/BENCHMARKS.md,
"Sigmoid's degree").
Backward: sigmoid' = y - y^2, tanh' = 1 - y^2, from the stored output: one square (1 round
opening y, 8 bytes an element each way, and its truncation), then the product with the
gradient. The derivative needs only the forward's output, so a training step can make it
beside other work (`sigmoid_derivative`, `tanh_derivative`) and the backward is the product.
"""

from __future__ import annotations

import numpy as np

from mpcrt.ops.piecewise import Piecewise, evaluate, fit
from mpcrt.ops.products import mul, square
from mpcrt.scope import op_label
from mpcrt.shares import ArithmeticShare

SIGMOID: Piecewise = fit(lambda x: 1 / (1 + np.exp(-x)),
                         (-8, -5, -3.5, -2.5, -1.5, -0.75, 0, 0.75, 1.5, 2.5, 3.5, 5, 8), 2, 0.0, 1.0)
TANH: Piecewise = fit(np.tanh, (-4.5, -3, -2.25, -1.75, -1.375, -1, -0.625, -0.25, 0, 0.25, 0.625, 1, 1.375, 1.75,
                                2.25, 3, 4.5), 2, -1.0, 1.0)


async def sigmoid(x: ArithmeticShare, method: str | None = None, lookup: bool | None = None,
                  frac_bits: int | None = None) -> ArithmeticShare:
    """1 / (1 + e^-x), max error 3.5e-4 plus a few units of 2^-f. lookup: how the pieces'
    coefficients are found (ops.piecewise.evaluate; by default as the links make cheaper).
    frac_bits: x is a product's untruncated output, truncated to frac_bits (the result's
    scale) in the comparisons' first round."""
    with op_label("sigmoid"):
        return await evaluate(x, SIGMOID, method, lookup, frac_bits)


async def tanh(x: ArithmeticShare, method: str | None = None, lookup: bool | None = None,
               frac_bits: int | None = None) -> ArithmeticShare:
    """tanh(x), max error 2.6e-4 plus a few units of 2^-f (lookup, frac_bits: as sigmoid's)."""
    with op_label("tanh"):
        return await evaluate(x, TANH, method, lookup, frac_bits)


async def sigmoid_derivative(y: ArithmeticShare) -> ArithmeticShare:
    """sigmoid'(x) = y - y^2 from the forward's output y (2 rounds: y's opening, the
    square's truncation); masked where y is (a product with it then opens nothing of it)."""
    with op_label("sigmoid_derivative"):
        return y - await square(y)


async def tanh_derivative(y: ArithmeticShare) -> ArithmeticShare:
    """tanh'(x) = 1 - y^2 from the forward's output y (2 rounds, as sigmoid_derivative):
    masked (the square's truncation's output), so a product with it opens nothing of it."""
    with op_label("tanh_derivative"):
        return 1 - await square(y)


async def sigmoid_backward(grad_out: ArithmeticShare, y: ArithmeticShare) -> ArithmeticShare:
    """grad_out * y * (1 - y), y the forward's output."""
    with op_label("sigmoid_backward"):
        return await mul(grad_out, await sigmoid_derivative(y))


async def tanh_backward(grad_out: ArithmeticShare, y: ArithmeticShare) -> ArithmeticShare:
    """grad_out * (1 - y^2), y the forward's output."""
    with op_label("tanh_backward"):
        return await mul(grad_out, await tanh_derivative(y))
