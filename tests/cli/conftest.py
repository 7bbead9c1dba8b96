"""The command-line tests' datasets: small unaligned folders and aligned A|B pairs."""

import pytest

from tests.cli.runs import write_images


@pytest.fixture(scope="module")
def unaligned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("unaligned")
    write_images(root / "trainA", 6, 40, seed=1)
    write_images(root / "trainB", 5, 40, seed=2)
    write_images(root / "testA", 3, 40, seed=3)
    return str(root)


@pytest.fixture(scope="module")
def aligned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    write_images(root / "train", 5, 40, seed=4, width_factor=2)
    write_images(root / "test", 2, 40, seed=5, width_factor=2)
    return str(root)
