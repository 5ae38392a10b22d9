"""Layers with forward and backward on secret shares (or plain tensors, to check formulas)."""

from gan.nn.activation import LeakyReLU, ReLU, Sigmoid, Square, Tanh
from gan.nn.conv import Conv2d, ConvTranspose2d
from gan.nn.linear import Linear
from gan.nn.module import Flatten, Module, Parameter, Reshape, Sequential
from gan.nn.norm import BatchNorm2d

__all__ = ["BatchNorm2d", "Conv2d", "ConvTranspose2d", "Flatten", "LeakyReLU", "Linear", "Module", "Parameter",
           "ReLU", "Reshape", "Sequential", "Sigmoid", "Square", "Tanh"]
