"""The training-state file keeps reflect_conv2d's measured kernel choices and the other
convolutions' measured algorithms: a resumed run runs the kernels its run measured, not
a fresh (timing-dependent) measurement; a state that does not fit the model says where."""

from __future__ import annotations

import os
import re

import pytest
import torch

import fastgan
from fastgan.engine.state import Progress, read_training_state, restore_training_state, save_training_state
from fastgan.models import CheckpointError
from fastgan.options import resolve
from fastgan.ops import _reflect_conv2d as rc
from fastgan.ops import _unfolded_conv as uc


@pytest.fixture
def clean_selection():
    rc.clear_selection_cache()
    uc.clear_selection_cache()
    yield
    rc.clear_selection_cache()
    uc.clear_selection_cache()


def _tiny_model(**options):
    return fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu", seed=1, **options)


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
    # the options that shape the nets, saved with the state, say what to type
    assert str(e.value).endswith("\n  the run was trained with --netG resnet_6blocks; this command has "
                                 "--netG resnet_9blocks: continue with the run's")


def test_a_flag_that_shapes_the_nets_is_named_as_typed(tmp_path, clean_selection):
    save_training_state(_tiny_model(), Progress(epoch=1, batch=0, total_iters=0, iteration=0), str(tmp_path))
    with pytest.raises(CheckpointError, match="the run was trained with --no_dropout; this command has no "
                                              "--no_dropout: continue with the run's$"):
        restore_training_state(_tiny_model(no_dropout=False), read_training_state(str(tmp_path)))


@pytest.mark.parametrize("content,message", [
    ({"epoch": 3}, "is not a fastgan training state (it holds keys epoch)"),
    ([1, 2], "is not a fastgan training state (it holds list)"),
])
def test_a_file_that_is_no_training_state_is_refused_naming_it(content, message, tmp_path):
    torch.save(content, tmp_path / "training_state.pt")
    with pytest.raises(CheckpointError, match=re.escape(message)):
        read_training_state(str(tmp_path))


@pytest.mark.parametrize("where,value", [("nets", float("nan")), ("nets", float("inf")), ("optimizers", float("nan"))])
def test_a_state_with_non_finite_values_is_refused_naming_where(where, value, tmp_path, clean_selection):
    """Bytes overwritten in the file load as NaNs (torch.load checks no checksum): resumed,
    the run trained on to all-NaN networks without a word. Infs and the optimizers' moments too."""
    model = _tiny_model()
    model.train_step({"A": torch.rand(1, 3, 32, 32), "B": torch.rand(1, 3, 32, 32)})  # Adam's moments exist
    save_training_state(model, Progress(epoch=1, batch=0, total_iters=0, iteration=0), str(tmp_path))
    state = torch.load(tmp_path / "training_state.pt", weights_only=False)
    part = state["model"][where]["G"]["state"][0]["exp_avg"] if where == "optimizers" else \
        next(iter(state["model"]["nets"]["G_B"].values()))
    part[(0,) * part.dim()] = value
    torch.save(state, tmp_path / "training_state.pt")
    with pytest.raises(CheckpointError, match=rf"holds non-finite values \({where}\.G[^)]*\): it was damaged"):
        restore_training_state(model, read_training_state(str(tmp_path)))


def test_saved_choices_are_adopted_all_or_nothing(clean_selection):
    """An unreadable convolution entry leaves the reflect_conv2d entries of the same save
    unadopted too (they went in first, and stayed, before)."""
    from fastgan.engine.state import load_measured_choices, measured_choices

    saved = {"conv_choices": {("fwd", 1): {"choice": "aten", "times": {}}},
             "unfolded_conv_choices": {("conv", 2): {"choice": "nonsense", "times": {}}}}
    with pytest.raises(ValueError, match="cannot be read"):
        load_measured_choices(saved)
    assert measured_choices() == {"conv_choices": {}, "unfolded_conv_choices": {}}


def test_a_save_that_cannot_be_adopted_keeps_the_choices_adopted_from_the_machines_cache(clean_selection):
    """The rollback of a failed load cleared the choices and reloaded what entries() held, which
    leaves out the machine cache's choices not yet met: they were lost."""
    from fastgan.engine.state import adopt_measured_choices, load_measured_choices
    from fastgan.ops import _reflect_conv2d

    adopt_measured_choices({"conv_choices": {("fwd", 1): {"choice": "aten", "times": {"aten": 1.0}}}})
    with pytest.raises(ValueError, match="cannot be read"):
        load_measured_choices({"conv_choices": {("fwd", 2): {"choice": "warp_drive", "times": {}}}})
    assert _reflect_conv2d._CHOICES.get(("fwd", 1)) == "aten"


def test_a_machine_cache_passes_over_the_entries_it_cannot_read_and_keeps_the_rest(tmp_path, monkeypatch,
                                                                                   clean_selection):
    """The per-machine choice cache never fails a run: an entry this fastgan cannot read (another
    version's, a damaged file's) is passed over, alone (one such entry made every later run
    measure everything anew, and stayed in the file for good), and left out of the next write."""
    from fastgan.engine import choice_cache
    from fastgan.engine.state import measured_choices

    cpu = torch.device("cpu")
    monkeypatch.setenv(choice_cache.ENV, str(tmp_path))
    path = choice_cache.cache_file(cpu)
    good = {("fwd", 2): {"choice": "aten", "times": {}}}
    torch.save({"conv_choices": {("fwd", 1): {"choice": "warp_drive", "times": {}}, **good},
                "unfolded_conv_choices": {("conv", 3): 7}}, path)
    assert choice_cache.adopt(cpu) == 1
    assert measured_choices() == {"conv_choices": {}, "unfolded_conv_choices": {}}  # until its shape comes
    assert rc._CHOICES.get(("fwd", 2)) == "aten"
    assert measured_choices() == {"conv_choices": good, "unfolded_conv_choices": {}}
    assert choice_cache.record(cpu) == path  # nothing new measured: the file is rewritten without them
    assert torch.load(path, weights_only=True) == {"conv_choices": good, "unfolded_conv_choices": {}}
    rc.load_selection_cache({("fwd", 4): {"choice": "aten", "times": {}}})  # measured by this run
    assert choice_cache.record(cpu) == path
    assert torch.load(path, weights_only=True) == {
        "conv_choices": {**good, ("fwd", 4): {"choice": "aten", "times": {}}}, "unfolded_conv_choices": {}}


def test_a_machine_cache_on_a_file_system_without_locks_is_written_unlocked(tmp_path, monkeypatch,
                                                                            clean_selection):
    import errno

    from fastgan.engine import choice_cache

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setenv(choice_cache.ENV, str(tmp_path))
    from fastgan import file_lock

    monkeypatch.setattr(file_lock.fcntl, "lockf", no_locks)
    rc.load_selection_cache({("fwd", 1): {"choice": "aten", "times": {}}})
    path = choice_cache.record(torch.device("cpu"))
    assert torch.load(path, weights_only=True)["conv_choices"] == {("fwd", 1): {"choice": "aten", "times": {}}}


def test_a_run_stopped_while_it_holds_the_cache_lock_only_costs_another_its_write(tmp_path, monkeypatch,
                                                                                  clean_selection):
    """A holder stopped with Ctrl-Z would have stalled every other run at its next save."""
    from fastgan.engine import choice_cache
    from tests.test_file_lock import hold_in_another_process

    monkeypatch.setenv(choice_cache.ENV, str(tmp_path))
    monkeypatch.setattr(choice_cache, "LOCK_WAIT_S", 0.2)
    path = choice_cache.cache_file(torch.device("cpu"))
    holder = hold_in_another_process(f"{path}.lock")
    try:
        rc.load_selection_cache({("fwd", 1): {"choice": "aten", "times": {}}})
        assert choice_cache.record(torch.device("cpu")) is None and not os.path.exists(path)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("content", [[1, 2], {"conv_choices": [1]}, {"conv_choices": {("fwd",): None}}, "text"])
def test_a_machine_cache_of_another_shape_is_measured_anew(tmp_path, monkeypatch, clean_selection, content):
    """A file that loads but is not a dict of dicts crashed the run before its first iteration
    (AttributeError: 'list' object has no attribute 'get')."""
    from fastgan.engine import choice_cache
    from fastgan.engine.state import measured_choices

    monkeypatch.setenv(choice_cache.ENV, str(tmp_path))
    torch.save(content, choice_cache.cache_file(torch.device("cpu")))
    assert choice_cache.adopt(torch.device("cpu")) == 0
    assert measured_choices() == {"conv_choices": {}, "unfolded_conv_choices": {}}


def test_runs_recording_at_once_keep_every_ones_choices(tmp_path, monkeypatch, clean_selection):
    """record() reads, merges and writes the file under a lock: without it, processes saving at
    the same moment dropped each other's entries (unlocked, 2 processes lost one in 5 of 5 trials)."""
    import multiprocessing

    from fastgan.engine import choice_cache

    monkeypatch.setenv(choice_cache.ENV, str(tmp_path))
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_record_one_choice, args=(str(tmp_path), tag, start)) for tag in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)  # far beyond two processes importing torch at once, even on loaded cores
    assert [w.exitcode for w in workers] == [0] * 2
    files = [name for name in os.listdir(tmp_path) if name.endswith(".pt")]  # the workers' machine key
    assert len(files) == 1
    saved = torch.load(tmp_path / files[0], weights_only=True)
    assert sorted(saved["conv_choices"]) == [("fwd", tag) for tag in range(2)]


def _record_one_choice(folder: str, tag: int, start) -> None:
    """A process that measured one choice of its own, saving it when both are ready; each
    write takes 0.2 s, so that unlocked, both read the file before either wrote it."""
    import time

    import fastgan.models

    os.environ["FASTGAN_CHOICE_CACHE"] = folder
    torch.set_num_threads(1)  # the machine key holds the threads: one file for all
    from fastgan.engine import choice_cache

    write = fastgan.models.save_checkpoint_file

    def slow_write(obj, path):
        time.sleep(0.2)
        write(obj, path)

    fastgan.models.save_checkpoint_file = slow_write
    rc.load_selection_cache({("fwd", tag): {"choice": "aten", "times": {}}})
    start.wait()
    choice_cache.record(torch.device("cpu"))  # a run's last save: its choices have no later chance


class _UncapturedIteration:
    """GraphedIteration's stand-in on the CPU: the plain iteration, and a count of the
    recaptures a model asks for."""

    def __init__(self, iterate, model):
        self.iterate, self.recaptures = iterate, 0

    def __call__(self, *inputs):
        return self.iterate(*inputs)

    def recapture(self):
        self.recaptures += 1


def _cyclegan_with(levels, monkeypatch):
    """A tiny CycleGAN on the CPU with `levels` as given (not resolved for the device): CUDA
    graphs' capture replaced by the plain iteration, to load and step its optimizers here."""
    from fastgan.engine import graphs
    from fastgan.engine.cyclegan import CycleGAN

    monkeypatch.setattr(graphs, "GraphedIteration", _UncapturedIteration)
    opt = resolve("cyclegan", {"ngf": 4, "ndf": 4, "netG": "resnet_6blocks", "device": "cpu", "seed": 1})
    torch.manual_seed(1)
    return CycleGAN(opt, torch.device("cpu"), levels)


@pytest.mark.parametrize("adam", ["default", "foreach", "fused"])
def test_a_state_saved_under_other_levels_keeps_this_runs_adam(adam, monkeypatch):
    """load_state_dict takes the saved param groups whole: a state saved without CUDA graphs
    gave a graphs run a non-capturable Adam with a float learning rate (its first step or its
    capture failed on a GPU), and the reverse gave an eager run a capturable one."""
    from fastgan.engine.levels import EAGER, Levels

    A, B = (torch.rand(1, 3, 32, 32) * 2 - 1 for _ in range(2))
    eager = _cyclegan_with(EAGER, monkeypatch)
    eager.train_step({"A": A, "B": B})  # step counters in the state
    graphed = _cyclegan_with(Levels(cuda_graphs=True, adam=adam), monkeypatch)
    graphed.load_state_dict(eager.state_dict())
    assert graphed._iterate.recaptures == 1  # a graph captured before would read the old optimizers
    for o in graphed.optimizers.values():
        for group in o.param_groups:
            assert group["capturable"] and bool(group["fused"]) == (adam == "fused")
            assert bool(group["foreach"]) == (adam == "foreach")
            assert torch.is_tensor(group["lr"]) and group["lr"].item() == pytest.approx(0.0002)
    back = _cyclegan_with(Levels(adam=adam), monkeypatch)
    back.load_state_dict(graphed.state_dict())
    for o in back.optimizers.values():
        for group in o.param_groups:
            assert not group["capturable"] and isinstance(group["lr"], float)
            assert all(o.state[p]["step"].device.type == "cpu" for p in group["params"])
    back.train_step({"A": A, "B": B})  # steps (a capturable group on the CPU would refuse)
    assert all(o.state[p]["step"].item() == 2 for o in back.optimizers.values() for g in o.param_groups
               for p in g["params"])
    # a graphs run's schedulers were built over tensor rates, which its state holds: at an epoch's
    # end a run resumed without graphs computes float rates from them
    later = _cyclegan_with(Levels(adam=adam), monkeypatch)
    later.load_state_dict(_cyclegan_with(Levels(cuda_graphs=True, adam=adam), monkeypatch).state_dict())
    later.update_learning_rate()
    assert all(isinstance(g["lr"], float) for o in later.optimizers.values() for g in o.param_groups)
    later.train_step({"A": A, "B": B})  # (a foreach Adam refused a tensor lr)
    graphed_lr = [g["lr"] for o in graphed.optimizers.values() for g in o.param_groups]
    graphed.update_learning_rate()  # a graphs run's lr stays its device tensor, filled in place
    assert [g["lr"] for o in graphed.optimizers.values() for g in o.param_groups] == graphed_lr
    assert all(g["lr"] is t for g, t in zip((g for o in graphed.optimizers.values() for g in o.param_groups),
                                             graphed_lr))


def test_a_gpu_runs_rng_state_is_its_own_devices(monkeypatch):
    """Saved and restored for the run's GPU, not for every visible GPU by index: a file of three
    GPUs' states restores the one of the run's device and no other, where fewer GPUs are
    visible too (set_rng_state_all raised IndexError there, outside the errors a resume names)."""
    from fastgan.engine import state as state_module

    states = {0: torch.tensor([0], dtype=torch.uint8), 1: torch.tensor([1], dtype=torch.uint8)}
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: states[device.index])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda value, device: restored.append((value.item(), device)))
    cuda1 = torch.device("cuda", 1)
    saved = state_module.rng_state(cuda1)
    assert saved["cuda"].item() == 1
    state_module.set_rng_state(saved, cuda1)
    assert restored == [(1, cuda1)]
    restored.clear()
    older = dict(saved, cuda=[torch.tensor([7], dtype=torch.uint8), torch.tensor([8], dtype=torch.uint8),
                              torch.tensor([9], dtype=torch.uint8)])  # an earlier file: one per GPU
    state_module.set_rng_state(older, cuda1)
    state_module.set_rng_state(older, torch.device("cuda", 5))  # that GPU's state is not in the file
    state_module.set_rng_state(older, torch.device("cpu"))
    assert restored == [(8, cuda1)]
    assert "cuda" not in state_module.rng_state(torch.device("cpu"))


@pytest.mark.parametrize("adam", ["default", "foreach", "fused"])
def test_models_loaded_from_one_live_state_train_apart(adam):
    """`b.load_state_dict(a.state_dict())` in one process: b's Adam moments are its own.
    Optimizer.load_state_dict keeps a saved tensor already on the parameter's device, so b
    and c loaded from a's state stepped one set of moments (a's): c's steps then followed
    b's and trained other weights than b's."""
    def model():
        return _tiny_model(pool_size=0, adam=adam)

    g = torch.Generator().manual_seed(2)
    A, B = (torch.rand(1, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    source = model()
    source.step(A, B)
    state = source.state_dict()
    moments = {k: v.clone() for k, v in state["optimizers"]["G"]["state"][0].items()}
    b, c = model(), model()
    b.load_state_dict(state)
    c.load_state_dict(state)
    for m in (b, c):
        for _ in range(2):
            m.step(A, B)
    for k, v in b.nets["G_A"].state_dict().items():
        torch.testing.assert_close(c.nets["G_A"].state_dict()[k], v, rtol=0, atol=0, msg=k)
    for k, v in moments.items():  # the source's own, untouched by b's and c's steps
        torch.testing.assert_close(source.optimizers["G"].state_dict()["state"][0][k], v, rtol=0, atol=0, msg=k)


def test_a_state_saved_in_one_layout_steps_the_same_in_the_other():
    """A state saved with NCHW weights resumed channels_last (the CPU default, where an earlier
    fastgan or --channels_last false saved it): the moments kept the saved strides, which the
    fused CPU Adam does not follow, and the losses drifted (0.014-0.074 within 8 iterations)."""
    g = torch.Generator().manual_seed(4)
    A, B = (torch.rand(1, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    saved = _tiny_model(pool_size=0, channels_last=False, adam="fused")
    saved.step(A, B)
    state = saved.state_dict()
    stepped = {}
    for channels_last in (False, True):
        model = _tiny_model(pool_size=0, channels_last=channels_last, adam="fused")
        model.load_state_dict(state)
        for o in model.optimizers.values():
            for group in o.param_groups:
                for p in group["params"]:
                    assert o.state[p]["exp_avg"].stride() == p.stride()
        model.step(A, B)
        stepped[channels_last] = model.nets["G_A"].state_dict()
    # the weights (a step moves each by about lr, 2e-4, and the wrong moments moved them 3e-4
    # off); a bias before an instance norm has only rounding noise for a gradient, which Adam
    # scales to full steps either way
    for k in (k for k in stepped[False] if k.endswith("weight")):
        torch.testing.assert_close(stepped[True][k], stepped[False][k], rtol=0, atol=1e-6, msg=k)
