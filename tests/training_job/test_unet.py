import json

import numpy as np
import pytest

from fundus_seg.cli import main
from training_job.unet import UNetConfig, build_unet, flops_per_image, trainable_params

# The paper's Table 1 (D/W/IR -> millions of trainable parameters), within ~15%.
TABLE_1 = [((5, 32, 1.5), 3.5), ((5, 40, 1.2), 1.1), ((6, 40, 1.3), 3.3), ((6, 40, 1.1), 0.9), ((7, 40, 1.2), 2.6), ((7, 64, 1.3), 14.0)]


@pytest.mark.parametrize("architecture, millions", TABLE_1)
def test_parameter_counts_match_table_1(architecture, millions):
    depth, width, ratio = architecture
    params = trainable_params(build_unet(UNetConfig(depth, width, ratio)))
    assert abs(params / 1e6 - millions) / millions < 0.15


def expected_params(widths: list[int], batchnorm: bool = True, upsampling: bool = False) -> int:
    """Trainable parameters of the paper's recursive U-Net, from its definition: at each level two 3x3
    convolutions (with a bias unless batch-normalised; batch norm adds a scale and an offset per filter),
    then, above the bottom, the deeper U-Net, an up-sampling (2x2 transposed convolution, or bilinear +
    1x1 convolution) to this level's width, the skip concatenation and two more 3x3 convolutions."""
    def block(channels_in: int, width: int) -> int:
        per_filter = 2 if batchnorm else 1  # scale + offset, or a bias
        return 9 * channels_in * width + 9 * width * width + 2 * per_filter * width

    def level(index: int, channels_in: int) -> int:
        width = widths[index]
        params = block(channels_in, width)
        if index == len(widths) - 1:
            return params
        deeper = widths[index + 1]
        up = (1 if upsampling else 4) * deeper * width + width
        return params + level(index + 1, width) + up + block(2 * width, width)

    return level(0, 3) + widths[0] + 1  # the 1x1 sigmoid output


@pytest.mark.parametrize("config, widths", [
    (UNetConfig(depth=3, width=8, increment_ratio=2.0), [8, 16, 32, 64]),
    (UNetConfig(depth=1, width=4, increment_ratio=1.5), [4, 6]),
    (UNetConfig(depth=2, width=8, increment_ratio=2.0, upsampling=True, batchnorm=False), [8, 16, 32]),
])
def test_depth_width_and_options_build_the_recursive_definition(config, widths):
    model = build_unet(config)
    assert model.output_shape == (None, 128, 128, 1)
    assert trainable_params(model) == expected_params(widths, config.batchnorm, config.upsampling)


def test_batchnorm_and_dropout_act_only_in_training():
    x = np.random.default_rng(0).random((2, 128, 128, 3), np.float32)
    plain = build_unet(UNetConfig(depth=2, width=4, batchnorm=False))
    assert not plain.non_trainable_weights  # no batch statistics to keep
    np.testing.assert_allclose(plain(x, training=True), plain(x, training=False), atol=1e-6)

    normalised = build_unet(UNetConfig(depth=2, width=4))
    assert normalised.non_trainable_weights  # the moving mean and variance
    assert not np.allclose(normalised(x, training=True), normalised(x, training=False), atol=1e-4)

    dropout = build_unet(UNetConfig(depth=2, width=4, batchnorm=False, dropout=0.5))
    np.testing.assert_array_equal(dropout(x, training=False), dropout(x, training=False))
    assert not np.allclose(dropout(x, training=True), dropout(x, training=True), atol=1e-6)


def test_invalid_configurations_are_refused():
    with pytest.raises(ValueError):
        UNetConfig(depth=8)  # 128 is not divisible by 256
    with pytest.raises(ValueError):
        UNetConfig(dropout=1.0)


def test_flops_scale_with_width():
    small = flops_per_image(build_unet(UNetConfig(depth=6, width=20, increment_ratio=1.1)))
    large = flops_per_image(build_unet(UNetConfig(depth=6, width=40, increment_ratio=1.1)))
    assert 3.5 < large / small < 4.5  # convolution cost grows with width squared
    assert 2.5e9 < large < 3.5e9  # the paper's net: ~3 GFLOP per 128x128 image


def test_model_info_command(capsys):
    assert main(["model-info", "--depth", "6", "--width", "40", "--ir", "1.1", "--no-batchnorm", "--upsampling"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "6/40/1.1" and info["upsampling"] and not info["batchnorm"]
    assert 0.7e6 < info["trainable_params"] < 1.0e6 and info["gflops_per_image"] > 2
