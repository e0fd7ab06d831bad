import json

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


def test_recursion_depth_width_and_options():
    model = build_unet(UNetConfig(depth=3, width=8, increment_ratio=2.0))
    names = {layer.name for layer in model.layers}
    assert {"enc0_conv1", "enc3_conv1", "down2", "up0_transpose", "dec0_conv2"} <= names and "enc4_conv1" not in names
    assert model.get_layer("enc3_conv1").filters == 64  # 8 * 2**3
    assert model.output_shape == (None, 128, 128, 1)
    upsampled = build_unet(UNetConfig(depth=2, width=8, upsampling=True, batchnorm=False, dropout=0.2))
    names = {layer.name for layer in upsampled.layers}
    assert "up0_upsample" in names and "up0_transpose" not in names
    assert not any("bn" in n for n in names) and "enc1_dropout" in names


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
