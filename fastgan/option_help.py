"""What each option does, for --help: the reference's meaning, and fastgan's for its own."""

from __future__ import annotations

# the frequencies count the reference's total_iters: --batch_size (x ranks) every iteration;
# they fire when the count crosses a multiple, where the reference's need it to land on one
COUNTED = (" (counted as the reference's total_iters: --batch_size (x ranks) per iteration, a short last batch too;"
           " fires when the count passes a multiple)")

HELP = {
    "arch": "what to train: cyclegan (unpaired) or pix2pix (paired); the reference's --model",
    "dataroot": "the dataset folder (trainA/trainB for unaligned data, train/ for aligned)",
    "name": "experiment name: checkpoints go to checkpoints_dir/name",
    "checkpoints_dir": "where experiment folders go",
    "device": "auto (cuda when there is one), cpu, cuda or cuda:N",
    "seed": "seeds weights, data order, augmentation and the image pool",
    "max_iters": "stop after this many iterations, saved and resumable",
    "input_nc": "channels of A images (1: grayscale)",
    "output_nc": "channels of B images",
    "ngf": "generator filters in its first conv",
    "ndf": "discriminator filters in its first conv",
    "netG": "generator architecture",
    "netD": "discriminator: basic (70x70 PatchGAN), n_layers (--n_layers_D), pixel (1x1)",
    "n_layers_D": "discriminator conv layers with --netD n_layers",
    "norm": "normalization layer of the nets",
    "init_type": "weight initialization",
    "init_gain": "scale of normal, xavier and orthogonal initialization",
    "no_dropout": "no dropout in the generator (cyclegan: none already)",
    "padding_type": "padding of the ResNet generator's blocks",
    "dataset_mode": "unaligned: {phase}A and {phase}B; aligned: {phase}/ of A|B pairs; single: one folder",
    "direction": "AtoB, or BtoA to swap the domains",
    "serial_batches": "take images in order (no shuffling; B indexed like A)",
    "num_threads": "loader workers (the torch loader starts at most one per CPU)",
    "batch_size": "images per iteration (per rank under torchrun)",
    "load_size": "resize images to this size",
    "crop_size": "then crop to this size",
    "max_dataset_size": "use at most this many images of each domain",
    "preprocess": "how images are resized and cropped",
    "no_flip": "no random horizontal flips",
    "phase": "the split: {phase}A/{phase}B or {phase}/ under --dataroot",
    "loader": "what reads images: dali, cache (decoded once, on the device), torch (DataLoader); auto picks",
    "cache_memory_fraction": "--loader cache/auto: the share of free device memory (on a CPU: of available "
                             "host memory, divided among the node's ranks) the decoded set may take",
    "epoch": "networks to load: latest or an epoch number (--continue_train, fastgan.test)",
    "load_iter": "networks iter_N to load (saved with --save_by_iter); 0: use --epoch",
    "print_freq": "log losses every this many images (0: never)" + COUNTED,
    "display_freq": "save a sample grid (and update web/) every this many images (0: never)" + COUNTED,
    "update_html_freq": "web/ keeps the images of a display crossing a multiple of this many images "
                        "(and the epoch's first; 0: the epoch's first only)",
    "no_html": "do not write web/ (the HTML page of training images)",
    "display_winsize": "width in pixels of the images on the HTML pages",
    "save_latest_freq": "save latest networks and state every this many images (0: never mid-epoch)" + COUNTED,
    "save_epoch_freq": "save networks {epoch}_net_* every this many epochs",
    "save_by_iter": "name the periodic saves iter_N instead of latest",
    "continue_train": "resume the run in checkpoints_dir/name (see README)",
    "epoch_count": "the first epoch's number: epochs epoch_count .. n_epochs + n_epochs_decay train, and the "
                   "learning-rate schedule starts there",
    "n_epochs": "epochs at the initial learning rate",
    "n_epochs_decay": "epochs after them with a decaying learning rate (--lr_policy linear: the last one "
                      "trains at lr / (n_epochs_decay + 1), zero comes after it)",
    "lr": "Adam's initial learning rate",
    "beta1": "Adam's beta1 (beta2 is 0.999)",
    "gan_mode": "GAN objective",
    "lambda_gp": "weight of the WGAN-GP gradient penalty on D's loss (the reference: none)",
    "pool_size": "generated images kept to train the discriminators on (0: none)",
    "lr_policy": "learning-rate schedule",
    "lr_decay_iters": "--lr_policy step: epochs between decays by 10",
    "lambda_A": "weight of cycle loss A -> B -> A",
    "lambda_B": "weight of cycle loss B -> A -> B",
    "lambda_identity": "weight of the identity loss, relative to lambda_A/lambda_B",
    "lambda_L1": "weight of pix2pix's L1 loss",
    "accelerate": "fastgan's fused modules (instance norm + activation, reflect-padded conv)",
    "compile": "torch.compile the nets",
    "cuda_graphs": "capture the whole iteration in a CUDA graph and replay it",
    "amp": "mixed precision (fp16 with a gradient scaler; GPU only)",
    "channels_last": "NHWC tensors",
    "adam": "Adam implementation",
    "merge_passes": "run a net's independent passes as one batch",
    "cudnn_benchmark": "let cuDNN time its algorithms per shape",
    "fast": "the fastest levels for the device, mixed precision included",
    "eager": "the reference's plain path, none of fastgan's levels",
    "verbose": "print the networks",
}

# defaults --help shows where the field's own would mislead
DEFAULT_TEXT = {
    "dataroot": "the embedded demo",
    "name": "experiment_name; demo_{arch} on the demo",
    "max_iters": "no limit",
    "compile": "the device's",
    "amp": "the device's",
    "adam": "the device's",
    "netG": "resnet_9blocks; pix2pix: unet_256",
    "norm": "instance; pix2pix: batch",
    "dataset_mode": "unaligned; pix2pix: aligned",
    "pool_size": "50; pix2pix: 0",
    "gan_mode": "lsgan; pix2pix: vanilla",
}
