"""Data: image folders, the reference's transforms and dataset modes, the loaders (torch
DataLoader, NVIDIA DALI, device-resident cache) behind create_loader, the embedded demo,
and the public datasets' download (python -m fastgan.data download NAME)."""

from fastgan.data.cache_loader import CacheLoader
from fastgan.data.dali_loader import DaliLoader, dali_import_error
from fastgan.data.datasets import AlignedDataset, SingleDataset, UnalignedDataset, create_dataset
from fastgan.data.demo import DEMO_DEFAULTS, demo_score, demo_style, prepare_demo
from fastgan.data.download import download
from fastgan.data.errors import DatasetError
from fastgan.data.image_folder import IMG_EXTENSIONS, load_image, make_dataset
from fastgan.data.loader import TorchLoader, create_loader

__all__ = [
    "DatasetError",
    "IMG_EXTENSIONS",
    "make_dataset",
    "load_image",
    "create_dataset",
    "create_loader",
    "prepare_demo",
    "demo_score",
    "demo_style",
    "DEMO_DEFAULTS",
    "UnalignedDataset",
    "AlignedDataset",
    "SingleDataset",
    "TorchLoader",
    "CacheLoader",
    "DaliLoader",
    "dali_import_error",
    "download",
]
