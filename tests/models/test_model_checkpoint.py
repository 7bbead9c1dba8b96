import errno
import os
import signal
import socket
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

import fastgan.models.checkpoint as ckpt_mod
from fastgan.models import (
    CheckpointError,
    define_D,
    define_G,
    export_state_dict,
    load_reference_checkpoint,
    remove_stale_temporaries,
    save_checkpoint_file,
)


def small_G(seed, netG="resnet_6blocks", norm="instance", dropout=False, ngf=4):
    torch.manual_seed(seed)
    return define_G(3, 3, ngf, netG, norm=norm, use_dropout=dropout)


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def error_of(net, checkpoint):
    with pytest.raises(CheckpointError) as e:
        load_reference_checkpoint(net, checkpoint)
    return str(e.value)


# ---- round trips ----------------------------------------------------------

@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_round_trip(norm):
    src, dst = small_G(0, norm=norm), small_G(1, norm=norm)
    if norm == "batch":  # make the running stats differ from their defaults
        src(torch.randn(2, 3, 16, 16))
    sd = export_state_dict(src)
    assert not torch.equal(sd["model.1.weight"], dst.state_dict()["model.1.weight"])
    assert load_reference_checkpoint(dst, sd) is dst
    assert_same_state(src, dst)
    src.eval(), dst.eval()
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(src(x), dst(x))


def test_export_is_a_cpu_copy_without_prefixes():
    net = small_G(0)
    wrapped = nn.DataParallel(net)  # on a CPU-only machine it just holds the module
    assert next(iter(wrapped.state_dict())).startswith("module.")
    sd = export_state_dict(wrapped)
    assert list(sd) == list(net.state_dict())
    before = sd["model.1.weight"].clone()
    with torch.no_grad():
        net.model[1].weight.add_(1.0)
    assert torch.equal(sd["model.1.weight"], before)  # not aliased to the live weights
    assert all(v.device.type == "cpu" for v in sd.values())


def test_export_of_a_channels_last_net_is_contiguous():
    """A net trained channels_last saves NCHW-contiguous tensors, as the reference's files hold
    (a script that .view()s a weight keeps working), with the same values."""
    net = small_G(0).to(memory_format=torch.channels_last)
    assert any(not v.is_contiguous() for v in net.state_dict().values())
    sd = export_state_dict(net)
    assert all(v.is_contiguous() for v in sd.values())
    for k, v in net.state_dict().items():
        assert torch.equal(sd[k], v)


def test_export_of_compiled_module():
    net = small_G(0)
    compiled = torch.compile(net)  # lazily compiled: nothing runs here
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    assert list(export_state_dict(compiled)) == list(net.state_dict())


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.",
                                    "_orig_mod.module.", "module.module."])
def test_prefixed_keys_are_stripped(prefix):
    src, dst = small_G(0), small_G(1)
    sd = OrderedDict((prefix + k, v) for k, v in src.state_dict().items())
    load_reference_checkpoint(dst, sd)
    assert_same_state(src, dst)
    assert all(k.startswith(prefix) for k in sd)  # the caller's dict is left alone


def test_inner_orig_mod_of_compiled_submodule_is_stripped():
    src, dst = small_G(0), small_G(1)
    sd = {k.replace("model.10.", "model.10._orig_mod."): v for k, v in src.state_dict().items()}
    assert any("._orig_mod." in k for k in sd)
    load_reference_checkpoint(dst, sd)
    assert_same_state(src, dst)


def test_loads_into_wrapped_networks():
    src = small_G(0)
    dst = small_G(1)
    load_reference_checkpoint(nn.DataParallel(dst), export_state_dict(src))
    assert_same_state(src, dst)


def test_metadata_is_deleted_and_missing_num_batches_tracked_filled():
    src, dst = small_G(0, norm="batch"), small_G(1, norm="batch")
    sd = src.state_dict()
    assert hasattr(sd, "_metadata")
    old = OrderedDict((k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    old["_metadata"] = {"": {"version": 1}}  # as a key, too
    load_reference_checkpoint(dst, old)
    assert torch.equal(dst.state_dict()["model.1.weight"], sd["model.1.weight"])
    assert "_metadata" in old  # the caller's dict is left alone


# ---- old releases' InstanceNorm running stats --------------------------------

def with_instance_norm_stats(sd, net):
    sd = OrderedDict(sd)
    names = [n for n, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(names) > 10
    for n in names:
        c = net.get_submodule(n).num_features
        sd[f"{n}.running_mean"] = torch.zeros(c)
        sd[f"{n}.running_var"] = torch.ones(c)
        sd[f"{n}.num_batches_tracked"] = torch.tensor(0)
    return sd


@pytest.mark.parametrize("netG", ["resnet_6blocks", "unet_128"])
def test_stray_instance_norm_running_stats_are_dropped(netG):
    src, dst = small_G(0, netG), small_G(1, netG)
    sd = with_instance_norm_stats(src.state_dict(), src)
    with pytest.raises(RuntimeError):  # what plain loading makes of such a file
        small_G(2, netG).load_state_dict(sd)
    load_reference_checkpoint(dst, sd)
    assert_same_state(src, dst)


@pytest.mark.parametrize("netG", ["resnet_6blocks", "unet_128"])
def test_stray_instance_norm_running_stats_are_dropped_for_an_accelerated_net(netG):
    """An accelerated net holds FusedInstanceNormAct where the instance norms were (the default
    levels' --continue_train, fastgan.accelerate'd models): an old release's file loads there too."""
    from fastgan import accelerate

    src, dst = small_G(0, netG), accelerate(small_G(1, netG))
    load_reference_checkpoint(dst, with_instance_norm_stats(src.state_dict(), src))
    plain = small_G(2, netG)
    plain.load_state_dict(dst.state_dict())
    assert_same_state(src, plain)


def test_an_old_releases_instance_norm_file_is_not_taken_for_batch_norm():
    """Its stray running stats sit beside no norm weight: the size hint, not a batch-norm one."""
    src = small_G(0, ngf=4)
    msg = error_of(small_G(1, ngf=8), with_instance_norm_stats(src.state_dict(), src))
    assert "looks like norm=batch" not in msg and "--ngf" in msg


def test_stray_stats_elsewhere_are_still_unexpected():
    src, dst = small_G(0), small_G(1)
    sd = OrderedDict(src.state_dict())
    sd["model.1.running_mean"] = torch.zeros(4)  # model.1 is a conv
    msg = error_of(dst, sd)
    assert "unexpected keys (1): model.1.running_mean" in msg


# ---- mismatches ------------------------------------------------------------

def test_mismatch_names_missing_and_unexpected_keys():
    resnet, unet = small_G(0), small_G(1, "unet_128")
    with pytest.raises(CheckpointError) as e:
        load_reference_checkpoint(unet, resnet.state_dict())
    err = e.value
    assert isinstance(err, RuntimeError)
    msg = str(err)
    assert "<state_dict>" in msg
    assert "missing keys (" in msg and "model.model.0.weight" in msg
    assert "unexpected keys (" in msg and "model.1.weight" in msg
    assert "resnet_6blocks" in msg and "unet_128" in msg  # the architecture hint


def test_long_key_lists_are_shortened():
    msg = error_of(small_G(1, "unet_256", norm="batch"), small_G(0, "resnet_9blocks").state_dict())
    assert "more)" in msg and len(msg) < 10_000


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_dropout_checkpoint_into_no_dropout_network(norm):
    trained = small_G(0, "resnet_9blocks", norm=norm, dropout=True)
    msg = error_of(small_G(1, "resnet_9blocks", norm=norm, dropout=False), trained.state_dict())
    assert "--no_dropout" in msg and "use_dropout=True" in msg
    assert "conv_block.6" in msg and "conv_block.5" in msg
    if norm == "instance":
        assert "missing keys" in msg and "model.10.conv_block.5.weight" in msg
        assert "unexpected keys" in msg and "model.10.conv_block.6.weight" in msg
    else:  # conv_block.6 is a BatchNorm in the network: a shape mismatch
        assert "shape mismatches" in msg
        assert "model.10.conv_block.6.weight checkpoint [16, 16, 3, 3] vs network [16]" in msg


def test_no_dropout_checkpoint_into_dropout_network():
    trained = small_G(0, dropout=False)
    msg = error_of(small_G(1, dropout=True), trained.state_dict())
    assert "--no_dropout" in msg and "use_dropout=False" in msg
    assert "model.10.conv_block.6.weight" in msg and "model.10.conv_block.5.weight" in msg


@pytest.mark.parametrize("ckpt_padding, net_padding", [("reflect", "zero"), ("zero", "replicate")])
def test_padding_mismatch_hint(ckpt_padding, net_padding):
    def G(seed, padding_type):
        torch.manual_seed(seed)
        return define_G(3, 3, 4, "resnet_6blocks", norm="instance", padding_type=padding_type)
    msg = error_of(G(1, net_padding), G(0, ckpt_padding).state_dict())
    words = {"reflect": "reflect or replicate", "replicate": "reflect or replicate", "zero": "zero"}
    assert f"trained with --padding_type {words[ckpt_padding]}, the network built with {words[net_padding]}" in msg
    assert "check --padding_type" in msg and "different architecture or options" not in msg


@pytest.mark.parametrize("ckpt_norm, net_norm", [("batch", "instance"), ("instance", "batch"),
                                                  ("none", "instance")])
def test_norm_mismatch_hint(ckpt_norm, net_norm):
    msg = error_of(small_G(1, norm=net_norm), small_G(0, norm=ckpt_norm).state_dict())
    assert f"norm={ckpt_norm}" in msg and f"norm={net_norm}" in msg and "--norm" in msg


def test_size_mismatch_hint():
    msg = error_of(small_G(1, ngf=8), small_G(0, ngf=4).state_dict())
    assert "shape mismatches" in msg and "model.1.weight checkpoint [4, 3, 7, 7] vs network [8, 3, 7, 7]" in msg
    assert "--ngf" in msg


def test_discriminator_checkpoint_into_generator():
    msg = error_of(small_G(1), define_D(3, 4, "basic", norm="instance").state_dict())
    assert "NLayerDiscriminator with n_layers=3" in msg


def test_not_a_state_dict():
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load_reference_checkpoint(small_G(0), [1, 2])


# ---- files -----------------------------------------------------------------

def test_path_input(tmp_path):
    src, dst = small_G(0), small_G(1)
    path = tmp_path / "latest_net_G.pth"
    assert save_checkpoint_file(export_state_dict(src), path) == str(path)
    load_reference_checkpoint(dst, path)
    assert_same_state(src, dst)
    load_reference_checkpoint(small_G(2), str(path))
    msg = error_of(small_G(3, dropout=True), path)
    assert str(path) in msg


def test_path_input_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "f": os.getcwd}, path)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors, refused"):
        load_reference_checkpoint(small_G(0), path)


def test_save_overwrites_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "5_net_D_A.pth"
    save_checkpoint_file({"a": torch.ones(2)}, path)
    save_checkpoint_file({"a": torch.full((2,), 7.0)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.full((2,), 7.0))
    assert os.listdir(tmp_path) == ["5_net_D_A.pth"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


KILLED_MID_SAVE = """
import os, signal, sys
import torch
from fastgan.models import save_checkpoint_file


class KilledWhilePickled:  # the SIGKILL (the OOM killer) arrives halfway through the write
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)


save_checkpoint_file({"a": torch.ones(1000), "b": KilledWhilePickled()}, sys.argv[1])
"""


def test_the_unfinished_save_of_a_killed_process_is_removed_and_live_ones_are_not(tmp_path):
    path = tmp_path / "latest_net_G.pth"
    save_checkpoint_file({"a": torch.zeros(1)}, path)
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_SAVE, str(path)], cwd=os.getcwd(),
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert killed.returncode == -signal.SIGKILL
    (left,) = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    host = socket.gethostname()
    being_written = f".latest_net_D.pth.{host}.{os.getpid()}.x1y2.tmp"  # this live process's
    other_host = ".latest_net_D.pth.elsewhere.1.x1y2.tmp"  # its pid means nothing here
    not_ours = ".notes.tmp"
    for name in (being_written, other_host, not_ours):
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_temporaries(str(tmp_path)) == [left]
    assert sorted(os.listdir(tmp_path)) == sorted([being_written, other_host, not_ours, "latest_net_G.pth"])
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(1))  # the old file stands
    assert remove_stale_temporaries(str(tmp_path / "missing")) == []


def _failing_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")  # a partial write, then the failure
    raise OSError("No space left on device")


@pytest.mark.parametrize("failure", ["save", "fsync", "interrupt"])
def test_failed_save_keeps_previous_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "latest_net_G.pth"
    old = export_state_dict(small_G(0))
    save_checkpoint_file(old, path)
    if failure == "save":
        monkeypatch.setattr(ckpt_mod.torch, "save", _failing_save)
        expected = OSError
    elif failure == "fsync":
        def fsync(fd):
            raise OSError("I/O error")
        monkeypatch.setattr(ckpt_mod.os, "fsync", fsync)
        expected = OSError
    else:
        def interrupted(*a, **k):
            raise KeyboardInterrupt
        monkeypatch.setattr(ckpt_mod.os, "replace", interrupted)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        save_checkpoint_file(export_state_dict(small_G(1)), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["latest_net_G.pth"]
    back = torch.load(path, weights_only=True)
    assert list(back) == list(old) and all(torch.equal(back[k], old[k]) for k in old)


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_mod.torch, "save", _failing_save)
    with pytest.raises(OSError):
        save_checkpoint_file({"a": torch.ones(1)}, tmp_path / "latest_net_G.pth")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_while_saving_is_an_os_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    """torch's zip writer turns a failed write into a RuntimeError, and closing the buffered
    file fails again: the save says what failed, an OSError naming the file (which the
    command lines print as one line). /dev/full fails every write with ENOSPC."""
    path = tmp_path / "latest_net_G.pth"
    save_checkpoint_file({"w": torch.zeros(3)}, path)
    real_fdopen = os.fdopen

    def full_disk(fd, mode):
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), mode)

    monkeypatch.setattr(ckpt_mod.os, "fdopen", full_disk)
    for size in (10, 100_000):  # found at close, or by torch.save itself
        with pytest.raises(OSError) as e:
            save_checkpoint_file({"w": torch.randn(size)}, path)
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(path), size
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["w"], torch.zeros(3))
    assert os.listdir(tmp_path) == ["latest_net_G.pth"]
