"""Interactive operations on shares (each awaited; concurrent ones share rounds)."""

from mpcrt.ops.boolean import and_, bit_to_arith
from mpcrt.ops.products import conv2d, conv_transpose2d, linear, matmul, mean, mul, square
from mpcrt.ops.truncation import truncate

__all__ = ["and_", "bit_to_arith", "conv2d", "conv_transpose2d", "linear", "matmul", "mean", "mul", "square",
           "truncate"]
