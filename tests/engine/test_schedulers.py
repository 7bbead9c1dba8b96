"""Learning-rate policies with the reference's epoch semantics."""

import pytest
import torch

import fastgan
from fastgan.engine.schedulers import LR_POLICIES, build_scheduler, restart_schedules, step_schedulers


def lrs(epochs, **options):
    model = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu", **options)
    seen = [model.learning_rate]
    for _ in range(epochs):
        seen.append(model.update_learning_rate())
    return seen


def test_linear_keeps_then_decays_to_zero():
    # lr for epochs 1..n_epochs, then linear decay over n_epochs_decay
    seen = lrs(7, lr=0.1, n_epochs=3, n_epochs_decay=4, epoch_count=1)
    factor = [1 - max(0, e + 1 - 3) / 5 for e in range(8)]
    assert seen == pytest.approx([0.1 * f for f in factor])
    assert seen[:3] == pytest.approx([0.1, 0.1, 0.1])
    assert seen[3] == pytest.approx(0.08)


def test_linear_honours_epoch_count():
    seen = lrs(2, lr=1.0, n_epochs=3, n_epochs_decay=3, epoch_count=3)
    assert seen == pytest.approx([1.0, 0.75, 0.5])


def test_step_policy():
    seen = lrs(6, lr=1.0, lr_policy="step", lr_decay_iters=2)
    assert seen == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01, 0.001])


def test_cosine_policy():
    seen = lrs(4, lr=1.0, lr_policy="cosine", n_epochs=4)
    assert seen == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466, 0.0], abs=1e-6)


def test_plateau_reduces_after_patience():
    model = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu", lr=1.0,
                                lr_policy="plateau")
    seen = [model.update_learning_rate(metric=1.0) for _ in range(8)]
    # first step sets the best; 5 epochs of patience without improvement, then x0.2
    assert seen == pytest.approx([1, 1, 1, 1, 1, 1, 0.2, 0.2])


def test_plateau_follows_the_metric_it_is_given():
    """A loss 1.2% lower each epoch improves on the best by more than the reference's threshold
    (1%, relative, mode min): the rate stays (a plateau that ignored the metric, watched it for a
    rise or used another threshold reduced it after 5 epochs)."""
    model = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu", lr=1.0,
                                lr_policy="plateau")
    assert [model.update_learning_rate(metric=0.988 ** epoch) for epoch in range(10)] == pytest.approx([1.0] * 10)


def test_a_restarted_schedule_fills_a_tensor_rate_in_place():
    """A captured CUDA-graph iteration reads the rate from its tensor (capturable Adam): a
    resume under other schedule options writes the new rate into that same tensor."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=torch.tensor(1.0))
    rate = optimizer.param_groups[0]["lr"]
    options = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu").opt
    restart_schedules({"G": optimizer}, options.replace(lr=0.3, n_epochs=2, n_epochs_decay=5), 4)
    assert optimizer.param_groups[0]["lr"] is rate and float(rate) == pytest.approx(0.3 * (1 - 3 / 6))


@pytest.mark.parametrize("policy", LR_POLICIES)
def test_every_policy_steps_a_tensor_rate_in_place(policy):
    """Under CUDA graphs each Adam's rate is a tensor that the captured step reads: every
    schedule must write into that tensor, the float schedule's values (ReduceLROnPlateau put
    floats there before a torch fix of 2025; checked on the GPU machine's torch by
    tools/gpu_stack_check.sh, which runs these tests)."""
    options = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu").opt.replace(
        lr=0.3, lr_policy=policy, n_epochs=2, n_epochs_decay=6, lr_decay_iters=3)
    on_tensor = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=torch.tensor(0.3))
    on_float = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.3)
    rate = on_tensor.param_groups[0]["lr"]
    schedulers = [build_scheduler(on_tensor, options), build_scheduler(on_float, options)]
    seen = set()
    for epoch in range(8):  # (plateau on a constant metric: its patience of 5, then a cut)
        step_schedulers(schedulers, metric=1.0)
        assert on_tensor.param_groups[0]["lr"] is rate, f"epoch {epoch}"
        assert float(rate) == pytest.approx(on_float.param_groups[0]["lr"]), f"epoch {epoch}"
        seen.add(round(float(rate), 6))
    assert len(seen) > 1  # the schedule moved it


def test_both_optimizers_follow_the_schedule():
    model = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu", lr=0.5,
                                n_epochs=0, n_epochs_decay=3)
    model.update_learning_rate()
    assert [o.param_groups[0]["lr"] for o in model.optimizers.values()] == pytest.approx([0.25, 0.25])


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="lr_policy"):
        fastgan.build_model("cyclegan", ngf=2, ndf=2, device="cpu", lr_policy="exp")


@pytest.mark.parametrize("options", [
    dict(lr=0.3, n_epochs=2, n_epochs_decay=5),
    dict(lr=0.3, n_epochs=2, n_epochs_decay=5, epoch_count=2),
    dict(lr=0.3, lr_policy="step", lr_decay_iters=2),
    dict(lr=0.3, lr_policy="cosine", n_epochs=6),
    dict(lr=0.3, lr_policy="plateau"),
])
def test_restarted_schedule_equals_one_that_ran_from_the_start(options):
    """--continue_train with other schedule options: the optimizers of a run driven by other
    options get the schedule these options give after as many epochs."""
    epochs = 7
    other = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu", lr=1.0,
                                beta1=0.9, n_epochs=1, n_epochs_decay=1)
    for _ in range(2):
        other.update_learning_rate()
    assert other.learning_rate == 0.0  # that run's schedule is over
    reference = lrs(epochs + 2, **options)
    model_options = other.opt.replace(beta1=0.5, **options)
    other.schedulers = restart_schedules(other.optimizers, model_options, epochs)
    for optimizer in other.optimizers.values():
        assert optimizer.param_groups[0]["lr"] == pytest.approx(reference[epochs])
        assert optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    other.opt = model_options
    # and the schedule goes on as that run's would
    assert [other.update_learning_rate() for _ in range(2)] == pytest.approx(reference[epochs + 1:])
