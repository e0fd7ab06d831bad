"""The paper's generalized U-Net, built recursively.

A U-Net of depth D is: a convolution block at width w, then (if D > 0) a down-sampling, a
U-Net of depth D-1 at width w*IR, an up-sampling back, a skip concatenation and a second
convolution block. Depth counts the down-sampling steps, so there are D+1 resolution levels;
with that convention the parameter counts of the paper's Table 1 come out (6/40/1.1 ~ 0.9 M).
"""
from __future__ import annotations

import keras
from keras import layers

from training_job.config import UNetConfig


def conv_block(x, width: int, config: UNetConfig, name: str):
    """Two 3x3 convolutions (optionally batch-normalised), dropout between them."""
    for i in (1, 2):
        x = layers.Conv2D(width, 3, padding="same", use_bias=not config.batchnorm, name=f"{name}_conv{i}")(x)
        if config.batchnorm:
            x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)  # short runs need settled statistics
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        if i == 1 and config.dropout > 0:
            x = layers.SpatialDropout2D(config.dropout, name=f"{name}_dropout")(x)
    return x


def up(x, width: int, config: UNetConfig, name: str):
    if config.upsampling:
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_upsample")(x)
        return layers.Conv2D(width, 1, name=f"{name}_upconv")(x)
    return layers.Conv2DTranspose(width, 2, strides=2, name=f"{name}_transpose")(x)


def unet_level(x, level: int, config: UNetConfig):
    """The recursive definition: block, then (if not at the bottom) down, recurse, up, merge."""
    width = config.width_at(level)
    x = conv_block(x, width, config, name=f"enc{level}")
    if level == config.depth:
        return x
    deeper = layers.MaxPooling2D(2, name=f"down{level}")(x)
    deeper = unet_level(deeper, level + 1, config)
    merged = layers.Concatenate(name=f"skip{level}")([x, up(deeper, width, config, name=f"up{level}")])
    return conv_block(merged, width, config, name=f"dec{level}")


OUTPUT_NAMES = {1: "disc_probability", 2: "disc_cup_probability"}


def build_unet(config: UNetConfig, channels: int = 1) -> keras.Model:
    """One sigmoid map per structure: 1 (the disc: the paper's model, stage 1) or 2 (disc, cup: stage 2)."""
    inputs = keras.Input((config.input_size, config.input_size, 3), name="images")
    features = unet_level(inputs, 0, config)
    outputs = layers.Conv2D(channels, 1, activation="sigmoid", name=OUTPUT_NAMES[channels], dtype="float32")(features)
    return keras.Model(inputs, outputs, name=f"unet_{config.depth}_{config.width}_{config.increment_ratio:g}")


def trainable_params(model: keras.Model) -> int:
    return int(sum(int(w.numpy().size) for w in model.trainable_weights))


def flops_per_image(model: keras.Model) -> int:
    """Multiply-adds x 2 of every convolution for one image (the cost that matters on CPU and GPU)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            _, h, w, cout = layer.output.shape
            if isinstance(layer, layers.Conv2DTranspose):
                h, w = layer.input.shape[1], layer.input.shape[2]  # each input pixel scatters a kernel
            total += 2 * h * w * kh * kw * cin * cout
    return total
