"""Interactive operations on shares (each awaited; concurrent ones share rounds)."""

from mpcrt.ops.activations import (
    Activation,
    ReluDerivative,
    leaky_relu,
    leaky_relu_with_derivative,
    relu,
    relu_with_derivative,
)
from mpcrt.ops.activations import backward as relu_backward
from mpcrt.ops.batchnorm import BatchNormContext, Normalized, batch_norm, batch_norm_backward, batch_norm_with_context
from mpcrt.ops.boolean import and_, bit_to_arith, mul_bit
from mpcrt.ops.compare import is_non_negative, less_than, msb
from mpcrt.ops.exp import exp, sigmoid_lpgan, tanh_lpgan
from mpcrt.ops.products import conv2d, conv_transpose2d, linear, matmul, mean, mul, open_masked, scale, square
from mpcrt.ops.roots import inv_sqrt, reciprocal, sqrt
from mpcrt.ops.sigmoid import sigmoid, sigmoid_backward, sigmoid_derivative, tanh, tanh_backward, tanh_derivative
from mpcrt.ops.truncation import truncate

__all__ = [
    "Activation", "BatchNormContext", "Normalized", "ReluDerivative", "and_", "batch_norm", "batch_norm_backward",
    "batch_norm_with_context", "bit_to_arith", "conv2d", "conv_transpose2d", "exp", "inv_sqrt", "is_non_negative",
    "leaky_relu", "leaky_relu_with_derivative", "less_than", "linear", "matmul", "mean", "msb", "mul", "mul_bit",
    "open_masked", "reciprocal", "relu", "relu_backward", "relu_with_derivative", "scale", "sigmoid",
    "sigmoid_backward", "sigmoid_derivative", "sigmoid_lpgan", "sqrt", "square", "tanh", "tanh_backward",
    "tanh_derivative", "tanh_lpgan", "truncate",
]
