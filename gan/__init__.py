"""gan: the private GAN library on top of mpcrt (layers, training, synthesis, the `lpgan` command)."""

from gan import nn
from gan.secure import reveal, secure

__all__ = ["nn", "reveal", "secure"]
