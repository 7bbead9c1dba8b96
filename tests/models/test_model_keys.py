"""State_dict keys, shapes and parameter counts against the reference's records."""

import json
from pathlib import Path

import pytest
import torch

from fastgan.models import count_parameters, define_D, define_G

# A copy of shared/reference/state_dict_keys.json (recorded from the reference),
# kept here so the tests run in any checkout.
RECORDS = Path(__file__).with_name("data") / "state_dict_keys.json"
SHARED_RECORDS = [p / "shared" / "reference" / "state_dict_keys.json"
                  for p in Path(__file__).resolve().parents[2:4]]


def _records():
    with open(RECORDS) as f:
        return json.load(f)


def build(variant, device="meta"):
    """The ngf/ndf=64 network a variant name describes (see REFERENCE.md).

    On the meta device construction allocates nothing; keys and shapes are the same.
    """
    parts = variant.split("/")
    with torch.device(device):
        if parts[0] == "G":
            _, netG, norm, dropout = parts
            assert dropout in ("dropout=True", "dropout=False")
            return define_G(3, 3, 64, netG, norm=norm, use_dropout=dropout == "dropout=True")
        _, netD, n_layers, channels, norm = parts
        return define_D(int(channels.removeprefix("in=")), 64, netD,
                        n_layers_D=int(n_layers.removeprefix("n_layers=")), norm=norm)


def test_records_hold_36_variants():
    assert len(_records()) == 36


def test_records_copy_matches_shared_reference():
    shared = [p for p in SHARED_RECORDS if p.exists()]
    if not shared:
        pytest.skip("no shared/reference folder beside this checkout")
    with open(shared[0]) as f:
        assert json.load(f) == _records()


@pytest.mark.parametrize("variant", sorted(_records()))
def test_keys_and_shapes_match_reference(variant):
    expected = [(k, tuple(s)) for k, s in _records()[variant]]
    got = [(k, tuple(v.shape)) for k, v in build(variant).state_dict().items()]
    assert got == expected


@pytest.mark.parametrize("make, count", [
    (lambda: define_G(3, 3, 64, "resnet_9blocks", norm="instance"), 11_378_179),
    (lambda: define_G(3, 3, 64, "resnet_9blocks", norm="batch"), 11_383_427),
    (lambda: define_G(3, 3, 64, "resnet_6blocks", norm="instance"), 7_837_699),
    (lambda: define_D(3, 64, "basic", norm="instance"), 2_764_737),
    (lambda: define_D(6, 64, "basic", norm="batch"), 2_768_705),
    (lambda: define_G(3, 3, 64, "unet_256", norm="batch"), 54_413_955),
    (lambda: define_G(3, 3, 64, "unet_128", norm="batch"), 41_828_995),
    (lambda: define_D(3, 64, "pixel", norm="instance"), 8_705),
], ids=["resnet9-instance", "resnet9-batch", "resnet6-instance", "D-basic-3-instance",
        "D-basic-6-batch", "unet256-batch", "unet128-batch", "D-pixel-instance"])
def test_parameter_counts_match_reference(make, count):
    with torch.device("meta"):
        net = make()
    assert count_parameters(net) == count


def test_count_parameters_counts_frozen_parameters_once():
    net = torch.nn.Linear(3, 2)
    net.weight.requires_grad_(False)
    shared = torch.nn.Sequential(net, net)
    assert count_parameters(shared) == 3 * 2 + 2


def test_dropout_moves_second_conv_of_resnet_block():
    plain = build("G/resnet_9blocks/instance/dropout=False").state_dict()
    dropped = build("G/resnet_9blocks/instance/dropout=True").state_dict()
    assert "model.10.conv_block.5.weight" in plain and "model.10.conv_block.6.weight" not in plain
    assert "model.10.conv_block.6.weight" in dropped and "model.10.conv_block.5.weight" not in dropped


def test_the_references_positional_calls_with_gpu_ids_build_the_same_nets():
    """The reference's models call define_G(..., init_gain, gpu_ids) and define_D(..., init_gain,
    gpu_ids): an empty gpu_ids is the CPU, the same draw as without it; a GPU without CUDA is
    refused in one line (the list used to land in padding_type)."""
    torch.manual_seed(0)
    g = define_G(3, 3, 8, "resnet_6blocks", "instance", False, "normal", 0.02, [])
    torch.manual_seed(0)
    plain = define_G(3, 3, 8, "resnet_6blocks", "instance", False, "normal", 0.02)
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), plain.state_dict().values()))
    d = define_D(3, 8, "n_layers", 2, "instance", "normal", 0.02, [])
    assert next(d.parameters()).device.type == "cpu"
    if torch.cuda.is_available():
        on_gpu = define_G(3, 3, 8, "resnet_6blocks", "instance", False, "normal", 0.02, [0])
        assert next(on_gpu.parameters()).device == torch.device("cuda:0")
    else:
        with pytest.raises(ValueError, match=r"gpu_ids \[0\]: no CUDA device here"):
            define_G(3, 3, 8, "resnet_6blocks", "instance", False, "normal", 0.02, [0])
