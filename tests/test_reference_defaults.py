"""Every default the reference's options table gives (../shared/reference/REFERENCE.md, "Options
and defaults"), written out here: a run with a --dataroot and no other option trains what the
reference's would, and fastgan.test translates as the reference's test.py does."""

from __future__ import annotations

import math

import pytest

from fastgan.options import resolve
from fastgan.test import TOOL_DEFAULTS

REFERENCE_DEFAULTS = {
    "name": "experiment_name", "checkpoints_dir": "./checkpoints", "input_nc": 3, "output_nc": 3,
    "ngf": 64, "ndf": 64, "netG": "resnet_9blocks", "netD": "basic", "n_layers_D": 3, "norm": "instance",
    "init_type": "normal", "init_gain": 0.02, "dataset_mode": "unaligned", "direction": "AtoB",
    "serial_batches": False, "num_threads": 4, "batch_size": 1, "load_size": 286, "crop_size": 256,
    "max_dataset_size": math.inf, "preprocess": "resize_and_crop", "no_flip": False, "epoch": "latest",
    "load_iter": 0, "print_freq": 100, "display_freq": 400, "save_latest_freq": 5000, "save_epoch_freq": 5,
    "save_by_iter": False, "continue_train": False, "epoch_count": 1, "n_epochs": 100, "n_epochs_decay": 100,
    "lr": 0.0002, "beta1": 0.5, "gan_mode": "lsgan", "pool_size": 50, "lr_policy": "linear",
    "lr_decay_iters": 50,
}
ARCH_DEFAULTS = {
    "cyclegan": {"no_dropout": True, "lambda_A": 10.0, "lambda_B": 10.0, "lambda_identity": 0.5},
    "pix2pix": {"no_dropout": False, "lambda_L1": 100.0, "norm": "batch", "netG": "unet_256",
                "dataset_mode": "aligned", "pool_size": 0, "gan_mode": "vanilla"},
}


@pytest.mark.parametrize("arch", ["cyclegan", "pix2pix"])
def test_a_run_with_only_a_dataroot_has_the_references_defaults(arch):
    opt = resolve(arch, {"dataroot": "./datasets/x"}).as_dict()
    want = {**REFERENCE_DEFAULTS, **ARCH_DEFAULTS[arch]}
    assert {k: opt[k] for k in want} == want


def test_the_test_command_has_the_references_defaults():
    assert {k: TOOL_DEFAULTS[k] for k in ("results_dir", "num_test", "eval", "phase", "aspect_ratio")} == {
        "results_dir": "./results/", "num_test": 50, "eval": False, "phase": "test", "aspect_ratio": 1.0}
