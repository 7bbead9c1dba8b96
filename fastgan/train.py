"""`python -m fastgan.train`: the reference's train.py command line, on fastgan.

    python -m fastgan.train --arch cyclegan --dataroot ./datasets/horse2zebra --name horse2zebra
    python -m fastgan.train --arch cyclegan            # the embedded demo

Every reference option name works (--model as --arch, --gpu_ids as --device, the
display options accepted and unused); fastgan adds --arch, --device, --seed,
--max_iters, --lambda_gp and its speed levels. With no --dataroot the run trains on
the embedded demo and ends by scoring G against the demo's ground truth. A run
stopped by a signal saves and exits with 128 + the signal's number.

    torchrun --nproc_per_node=4 -m fastgan.train --dataroot ./datasets/horse2zebra --name h2z

trains data-parallel (fastgan.engine.distributed): --batch_size is per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys

from fastgan.cli import (add_option_arguments, add_reference_arguments, check_backend_variable, fail,
                         from_reference_arguments, import_ops_or_fail, warnings_in_one_line, with_suffix)
from fastgan.errors import first_line, folder_problem, os_error_line
from fastgan.options import DEMO_DEFAULTS, check_arch_options, resolve


def parse(argv=None) -> dict:
    demo = "; ".join(f"{arch}: " + " ".join(f"--{k} {v}" for k, v in values.items())
                     for arch, values in DEMO_DEFAULTS.items())
    parser = argparse.ArgumentParser(prog="python -m fastgan.train", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s [--arch cyclegan|pix2pix] [--dataroot DIR] [options] "
                                           "(--help lists them)",
                                     epilog=f"Without --dataroot (the embedded demo) these defaults differ: {demo}.")
    add_option_arguments(parser)
    add_reference_arguments(parser)
    return vars(parser.parse_args(argv))


def main(argv=None) -> dict:
    explicit = parse(argv)
    import_ops_or_fail()
    from fastgan.data import DatasetError, create_loader, demo_score, prepare_demo
    from fastgan.engine.distributed import Ranks, check_ranks_agree, is_peer_failure, launched_world_size, rank_label
    from fastgan.engine.levels import resolve_levels
    from fastgan.engine.logs import options_table_of, reference_table_entries
    from fastgan.engine.models import resolve_device
    from fastgan.engine.run_lock import LOCK_FILE, RunFolderInUse, lock_run_folder, unlock_run_folder
    from fastgan.engine.trainer import Trainer
    from fastgan.models import CheckpointError

    ranks = Ranks()
    new_run_folder = []  # the run's folder, when this command will make it

    def stop(message: str) -> None:  # one line; with several ranks, each says which it is
        for folder in new_run_folder:  # refused before anything was written: leave no empty run behind
            if not os.path.isdir(folder) or not set(os.listdir(folder)) <= {LOCK_FILE}:
                continue
            try:
                lock_run_folder(folder)  # free: not a folder another run locked meanwhile
            except RunFolderInUse:
                continue
            shutil.rmtree(folder)
            unlock_run_folder(folder)
        fail(rank_label(ranks) + message)

    try:
        try:  # bad option values surface as ValueError while building
            suffix, notes = from_reference_arguments(explicit)
            arch = explicit.pop("arch", "cyclegan")
            check_arch_options(arch, explicit)
            demo_defaults = {"name": f"demo_{arch}", **DEMO_DEFAULTS[arch]}
            opt = with_suffix(resolve(arch, explicit, demo_defaults), suffix)
            if launched_world_size() > 1:
                opt, ranks = start_data_parallel(opt)
            for note in notes if ranks.is_main else ():
                print(note)
            if opt.demo:
                opt = opt.replace(dataroot=prepare_demo(arch))
                if ranks.is_main:
                    print(f"no --dataroot: training on the embedded {arch} demo in {opt.dataroot}")
            run_folder = os.path.join(opt.checkpoints_dir, opt.name)
            if ranks.is_main and not os.path.exists(run_folder):
                new_run_folder.append(run_folder)
            if ranks.is_main and (problem := folder_problem(run_folder)):  # before the data is read
                raise ValueError(f"--checkpoints_dir {opt.checkpoints_dir}: {problem} (this run's folder: "
                                 f"{run_folder})")
            device = resolve_device(opt.device)
            if not opt.eager:  # --eager runs the torch back end whatever the variable says
                check_backend_variable(device)
            if opt.dataset_mode == "single":
                raise ValueError("--dataset_mode single reads A images only, and training takes A and B: use "
                                 "unaligned (trainA/, trainB/) or aligned (A|B pairs); single serves fastgan.test")
            levels = resolve_levels(opt, device)  # (refuses levels the device cannot run: before the table)
            table_entries = {**reference_table_entries(opt.arch, device), **suffix.table_entries(training=True)}
            if ranks.is_main:  # first, as the reference's option parser prints it: before the data is read
                print(options_table_of(opt, table_entries), end="", flush=True)
            # the loader yields NHWC batches where the levels resolve to channels_last (the run's
            # options keep the user's choice: train_opt.txt shows a default as one)
            loader = create_loader(opt.replace(channels_last=levels.channels_last), device,
                                   rank=ranks.rank, world_size=ranks.world_size)
            check_ranks_agree(ranks, opt, loader.num_images, getattr(loader, "kind", None))
            trainer = Trainer(opt, loader, ranks=ranks, table_entries=table_entries)
        except ValueError as e:
            stop(str(e))
        summary = trainer.run()
        ranks.close(trainer.model)  # after a finished or stopped run only: see Ranks.close
    except (DatasetError, CheckpointError, RunFolderInUse) as e:
        stop(str(e))
    except OSError as e:  # a folder that cannot be made or written, a file that went missing
        stop(os_error_line(e))
    except KeyboardInterrupt as e:  # a second signal (or Ctrl-C outside the loop): at once
        if getattr(e, "after_save", False):
            print("\nstopped once the save in progress was written: resume with --continue_train", file=sys.stderr)
        else:
            print("\nstopped at once: what this run did since its last checkpoint is not saved", file=sys.stderr)
        raise SystemExit(128 + getattr(e, "signum", signal.SIGINT)) from None
    except Exception as e:
        if ranks.world_size > 1 and is_peer_failure(e):
            fail_rank(ranks, e)
        raise
    if opt.demo and trainer.writes and summary["signal"] is None:  # (not after a run with nothing to train)
        summary["demo_score"] = report_demo_score(opt, trainer, demo_score)
    return summary


def exit_status(summary: dict) -> int:
    """0, or 128 + the signal that stopped the run (saved, resumable), as a shell reports a
    process that signal ended, so a scheduler can tell a stopped run from a finished one."""
    return 128 + summary["signal"] if summary.get("signal") else 0


def start_data_parallel(opt):
    """Join torchrun's process group; opt on this rank's device, CUDA graphs off unless asked for.

    CUDA graphs cannot capture DDP's gradient all-reduce yet: asked for
    explicitly they are refused, and a device default that would turn them on
    is overridden (the model refuses them too, for Python callers).
    """
    from fastgan.engine.distributed import init_from_env
    from fastgan.engine.models import resolve_device

    if opt.cuda_graphs:
        raise ValueError("--cuda_graphs cannot be combined with data-parallel training (torchrun) yet: DDP "
                         "all-reduces the gradients from autograd hooks, outside a captured graph. "
                         "Drop --cuda_graphs, or train on one process")
    ranks, device = init_from_env(resolve_device(opt.device))
    changes = {"device": str(device)}
    # --eager has no CUDA graphs, and refuses level options; on a CPU the default has none
    # either (train_opt.txt then shows nothing changed that was not typed)
    if not opt.eager and device.type == "cuda":
        changes["cuda_graphs"] = False
    return opt.replace(**changes), ranks


def fail_rank(ranks, error: BaseException) -> None:
    """One clear line on stderr, exit status 1: this rank lost another (it died or stopped answering)."""
    from fastgan.engine.distributed import TIMEOUT_ENV, timeout_seconds

    print(f"error: rank {ranks.rank} of {ranks.world_size} stopped: another rank died or stopped answering "
          f"({first_line(error)}). A rank that crashes, or is silent for {timeout_seconds():g} s "
          f"(${TIMEOUT_ENV}), stops every rank; the first rank to fail logged the cause", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not SystemExit: the gloo threads still blocked on the lost peer would live on into
    # interpreter finalization, where one that needs the GIL ends in std::terminate (SIGABRT,
    # "terminate called without an active exception") instead of exit status 1. Nothing is
    # lost: the logs open, append and close the file at every line, the progress bar is closed.
    os._exit(1)


def report_demo_score(opt, trainer, demo_score) -> dict:
    from fastgan.engine.trainer import generator_for_scoring

    G = generator_for_scoring(trainer.model)
    score = demo_score(opt.arch, G, opt.dataroot, trainer.model.device)
    verdict = "beats" if score["model"] < score["identity"] else "does NOT beat"
    short = trainer.progress.epoch <= trainer.last_epoch  # stopped before the schedule's last epoch ended
    print(f"demo ground truth, held-out crops: G error {score['model']:.4f} vs identity baseline "
          f"{score['identity']:.4f} (mean absolute error, [0,1] pixels): the model {verdict} the baseline"
          + (f" after {trainer.progress.iteration} iterations, short of the demo's "
             f"{trainer.last_epoch - trainer.opt.epoch_count + 1} epochs" if short else ""))
    with open(os.path.join(trainer.dir, "demo_score.json"), "w", encoding="utf-8") as f:
        json.dump(score, f)
    return score


if __name__ == "__main__":
    warnings_in_one_line()
    try:
        sys.exit(exit_status(main(sys.argv[1:])))
    except KeyboardInterrupt:  # Ctrl-C while torch loads, before the run began: nothing to save
        print("\nstopped before the run began", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
