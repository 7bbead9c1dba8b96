import pytest
import torch
import torch.nn as nn

from fastgan.models import define_G, get_norm_layer, use_conv_bias
from fastgan.models.norm import NORM_TYPES


def test_instance_is_the_references():
    m = get_norm_layer("instance")(16)
    assert type(m) is nn.InstanceNorm2d
    assert (m.num_features, m.affine, m.track_running_stats) == (16, False, False)
    assert m.running_mean is None and len(m.state_dict()) == 0


def test_instance_affine_has_parameters_but_no_running_stats():
    m = get_norm_layer("instance_affine")(16)
    assert type(m) is nn.InstanceNorm2d and m.affine and not m.track_running_stats
    assert sorted(m.state_dict()) == ["bias", "weight"]


@pytest.mark.parametrize("name, cls", [("batch", nn.BatchNorm2d), ("syncbatch", nn.SyncBatchNorm)])
def test_batch_norms_have_affine_and_running_stats(name, cls):
    m = get_norm_layer(name)(8)
    assert type(m) is cls and m.affine and m.track_running_stats
    assert sorted(m.state_dict()) == ["bias", "num_batches_tracked", "running_mean",
                                      "running_var", "weight"]


def test_none_is_identity():
    m = get_norm_layer("none")(8)
    x = torch.randn(2, 8, 3, 3)
    assert m(x) is x and len(m.state_dict()) == 0


def test_unknown_norm_lists_valid_names():
    with pytest.raises(ValueError) as e:
        get_norm_layer("group")
    for name in NORM_TYPES:
        assert name in str(e.value)
    assert set(NORM_TYPES) == {"instance", "instance_affine", "batch", "syncbatch", "none"}


@pytest.mark.parametrize("norm, bias", [("instance", True), ("instance_affine", True),
                                        ("batch", False), ("syncbatch", False), ("none", False)])
def test_bias_rule(norm, bias):
    assert use_conv_bias(get_norm_layer(norm)) is bias


def test_bias_rule_accepts_bare_classes_like_the_reference():
    assert use_conv_bias(nn.InstanceNorm2d) is True
    assert use_conv_bias(nn.BatchNorm2d) is False


def test_instance_affine_generator_keeps_conv_biases_and_adds_norm_parameters():
    sd = define_G(3, 3, 4, "resnet_6blocks", norm="instance_affine").state_dict()
    assert sd["model.1.bias"].shape == (4,) and sd["model.2.weight"].shape == (4,)
    assert "model.10.conv_block.1.bias" in sd and "model.10.conv_block.2.weight" in sd
    assert not any("running" in k for k in sd)
