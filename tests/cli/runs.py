"""What the command-line tests share: generated image folders and a tiny run's options."""

import os

import numpy as np
import torch
from PIL import Image


def write_images(folder, n, size, seed, width_factor=1):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        array = rng.integers(0, 256, (size, size * width_factor, 3), dtype=np.uint8)
        Image.fromarray(array).save(os.path.join(folder, f"img{i:03d}.png"))


def write_images_of_sizes(root, sides, sizes, seed):
    """In each folder of `sides` under root, one random image of each (height, width) of `sizes`."""
    rng = np.random.default_rng(seed)
    for side in sides:
        os.makedirs(os.path.join(root, side))
        for i, size in enumerate(sizes):
            array = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(array).save(os.path.join(root, side, f"img{i}.png"))


def tiny_args(root, checkpoints, name, arch="cyclegan"):
    return ["--arch", arch, "--dataroot", root, "--checkpoints_dir", str(checkpoints), "--name", name,
            "--ngf", "4", "--ndf", "4", "--netG", "resnet_6blocks", "--load_size", "36", "--crop_size", "32",
            "--n_epochs", "1", "--n_epochs_decay", "1", "--print_freq", "1", "--display_freq", "4",
            "--num_threads", "0", "--device", "cpu", "--save_epoch_freq", "1", "--seed", "7"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)
