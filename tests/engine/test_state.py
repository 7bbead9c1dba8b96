"""The training-state file keeps reflect_conv2d's measured kernel choices and the other
convolutions' measured algorithms: a resumed run runs the kernels its run measured, not
a fresh (timing-dependent) measurement; a state that does not fit the model says where."""

from __future__ import annotations

import pytest
import torch

import fastgan
from fastgan.engine.state import Progress, read_training_state, restore_training_state, save_training_state
from fastgan.models import CheckpointError
from fastgan.ops import _reflect_conv2d as rc
from fastgan.ops import _unfolded_conv as uc


@pytest.fixture
def clean_selection():
    rc.clear_selection_cache()
    uc.clear_selection_cache()
    yield
    rc.clear_selection_cache()
    uc.clear_selection_cache()


def _tiny_model():
    return fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu", seed=1)


def test_resume_restores_the_measured_kernel_choices(tmp_path, clean_selection):
    model = _tiny_model()
    A, B = (torch.rand(1, 3, 32, 32) * 2 - 1 for _ in range(2))
    model.train_step({"A": A, "B": B})  # measures every conv shape of the nets
    measured = rc.selection_cache()
    assert any(key[1] == "winograd" for key in measured), "the 3x3 residual convs were measured"
    # a choice the measurement might not have made, so that restoring is visible
    key = next(k for k in measured if k[1] == "winograd")
    flipped = "aten" if measured[key]["choice"] == "winograd" else "winograd"
    rc._CHOICES.record(key, flipped, measured[key]["times"])
    saved = rc.selection_cache()
    conv_key = next(iter(uc.selection_cache()))  # the downsampling, upsampling and D convolutions
    conv_entry = uc.selection_cache()[conv_key]
    uc._CHOICES.record(conv_key, "aten" if conv_entry["choice"] == "gemm" else "gemm", conv_entry["times"])
    saved_conv = uc.selection_cache()
    save_training_state(model, Progress(epoch=1, batch=1, total_iters=1, iteration=1), str(tmp_path),
                        rank_states=None)

    rc.clear_selection_cache()  # a new process
    uc.clear_selection_cache()
    resumed = _tiny_model()
    assert restore_training_state(resumed, read_training_state(str(tmp_path))) is not None
    assert rc.selection_cache() == saved
    assert uc.selection_cache() == saved_conv
    assert rc.selection_cache()[key]["choice"] == flipped


def test_unknown_saved_choice_is_an_error(clean_selection):
    with pytest.raises(ValueError, match="unknown choice 'cudnn'"):
        rc.load_selection_cache({("forward",): {"choice": "cudnn", "times": {}}})
    with pytest.raises(ValueError, match="unknown choice 'cudnn'"):
        uc.load_selection_cache({("conv2d",): "cudnn"})


def test_convolution_choices_saved_without_times_still_load(clean_selection):
    """Training states and choice caches written before the convolutions kept their times
    hold a bare name per shape."""
    uc.load_selection_cache({("conv2d", (1, 2, 3, 3)): "gemm"})
    assert uc.selection_cache() == {("conv2d", (1, 2, 3, 3)): {"choice": "gemm", "times": {}}}


def test_a_state_whose_nets_do_not_fit_names_the_file_and_the_net(tmp_path, clean_selection):
    model = _tiny_model()
    path = save_training_state(model, Progress(epoch=1, batch=0, total_iters=0, iteration=0), str(tmp_path))
    other = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_9blocks", device="cpu", seed=1)
    with pytest.raises(CheckpointError) as e:
        restore_training_state(other, read_training_state(str(tmp_path)))
    assert str(e.value).startswith(f"{path}: cannot load checkpoint net G_A into ResnetGenerator:")


def test_saved_choices_are_adopted_all_or_nothing(clean_selection):
    """An unreadable convolution entry leaves the reflect_conv2d entries of the same save
    unadopted too (they went in first, and stayed, before)."""
    from fastgan.engine.state import load_measured_choices, measured_choices

    saved = {"conv_choices": {("fwd", 1): {"choice": "aten", "times": {}}},
             "unfolded_conv_choices": {("conv", 2): {"choice": "nonsense", "times": {}}}}
    with pytest.raises(ValueError, match="cannot be read"):
        load_measured_choices(saved)
    assert measured_choices() == {"conv_choices": {}, "unfolded_conv_choices": {}}


def test_a_machine_cache_with_an_unreadable_entry_is_measured_anew(tmp_path, monkeypatch, clean_selection):
    """The per-machine choice cache never fails a run: an entry this fastgan cannot read (another
    version's) makes the run measure for itself."""
    from fastgan.engine import choice_cache
    from fastgan.engine.state import measured_choices

    monkeypatch.setenv(choice_cache.ENV, str(tmp_path))
    path = choice_cache.cache_file(torch.device("cpu"))
    torch.save({"conv_choices": {("fwd", 1): {"choice": "warp_drive", "times": {}}}}, path)
    assert choice_cache.adopt(torch.device("cpu")) == 0
    assert measured_choices() == {"conv_choices": {}, "unfolded_conv_choices": {}}
