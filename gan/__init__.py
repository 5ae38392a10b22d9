"""gan: the private GAN library on top of mpcrt (layers, training, synthesis, the `lpgan` command)."""

from gan import nn
from gan.secure import placeholder, plaintext, receive_module, reveal, secure, share_module

__all__ = ["nn", "placeholder", "plaintext", "receive_module", "reveal", "secure", "share_module"]
