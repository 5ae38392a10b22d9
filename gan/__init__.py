"""gan: the private GAN library on top of mpcrt (layers, training, synthesis, the `lpgan` command)."""
