"""A training run: the reference's epoch loop with progress, logs, samples and resume.

Frequencies (print_freq, display_freq, save_latest_freq) count the reference's
total_iters: --batch_size (the global batch) per iteration, also for an epoch's
short last batch; an event fires when total_iters crosses a multiple of its
frequency, so batch sizes that do not divide it still fire.
Networks are written under the reference's names ({epoch}_net_{name}.pth,
latest_net_*.pth, iter_N_net_*.pth with --save_by_iter); the training-state
file beside them lets --continue_train resume exactly where the run stopped.
SIGINT/SIGTERM stop after the current iteration and save first. Samples go to
samples/ and, unless --no_html, to the reference's web/ page (fastgan.engine.web_page).

In a data-parallel run (fastgan.engine.distributed) every rank runs this loop
on its shard of each global batch and counts iterations globally; rank 0 alone
writes checkpoints, logs, samples and the progress bar (the logged losses are
the ranks' mean); every rank loads on resume; all stop after the same iteration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

import torch
from tqdm import tqdm

from fastgan.data.errors import DatasetError
from fastgan.data.plan import rank_shares
from fastgan.engine import choice_cache
from fastgan.engine.distributed import Ranks, rank_label
from fastgan.engine.levels import describe_saved, fast_note
from fastgan.engine.logs import (LossLog, reference_loss_line, reference_table_entries, save_sample_grid,
                                 write_options_table)
from fastgan.engine.models import check_image_fits, model_from_options
from fastgan.engine.run_lock import lock_run_folder, unlock_run_folder
from fastgan.engine.schedulers import SCHEDULE_OPTIONS, restart_schedules
from fastgan.engine.state import (STATE_FILE, Progress, op_backends, rank_state, read_training_state,
                                  restore_training_state, save_training_state)
from fastgan.engine.stop_request import StopRequest
from fastgan.engine.web_page import TrainingPage
from fastgan.errors import first_line, os_error_line
from fastgan.models import CheckpointError, count_parameters, remove_stale_temporaries, write_file_atomically
from fastgan.ops import choices_by_size_class
from fastgan.options import Options, checkpoint_label, size_class_note, sizes_vary, square_side


def crossed(total: int, step: int, freq: int) -> bool:
    """Did total_iters pass a multiple of freq in its last `step`?"""
    return freq > 0 and total // freq > (total - step) // freq


def saved_global_batch(state: dict, batch_size: int) -> int:
    """Images per iteration of the run that saved `state` (its --batch_size, else `batch_size`,
    times its ranks)."""
    return int(state.get("options", {}).get("batch_size", batch_size)) * max(1, len(state.get("ranks") or []))


@dataclasses.dataclass
class RunTally:
    """What Trainer.run counts as it trains: images (over all ranks), why and by which signal
    it stopped, and its seconds once it ends."""
    start: float
    stopped: str | None = None
    signum: int | None = None
    images: int = 0
    seconds: float = 0.0
    marked: tuple[float, int] | None = None  # (time, images) at the last rate()

    def rate(self) -> float:
        """Images/s since the previous call (the first: since the start): the current speed, which a
        run average would hide behind the first iteration's compiling and measuring. Called once
        the losses are read (a host sync): queued GPU work is not done work."""
        since, images_then = self.marked or (self.start, 0)
        now = time.perf_counter()
        self.marked = (now, self.images)
        return (self.images - images_then) / (now - since)


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


class Trainer:
    """`ranks`: this process's place in a data-parallel run (default: the only process);
    `table_entries`: the options table's rows of the reference's options fastgan spells
    otherwise or drops, (value, default) (default: --model and --gpu_ids of `opt` and the model's device)."""

    def __init__(self, opt: Options, loader, log=tqdm.write, ranks: Ranks | None = None,
                 table_entries: dict[str, tuple] | None = None):  # log: above the bar
        self.opt = opt
        self.command_options = opt  # as given (a resume may take the run's epoch_count): the options table's
        self.table_entries = table_entries
        self.loader = loader
        self.ranks = ranks if ranks is not None else Ranks()
        self.main = self.ranks.is_main
        self.stop_request: StopRequest | None = None  # run()'s, which saves wait for
        self._saved_records: tuple | None = None  # an exact resume's point in loss_log.jsonl
        # the iterations whose training state, and whose latest_net_* with it, were saved last
        self.state_saved_at: int | None = None
        self.latest_saved_at: int | None = None
        self.log = log if self.main else _silent
        self.dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.progress = Progress(epoch=opt.epoch_count, batch=0, total_iters=0, iteration=0)
        # Whether this process writes the run folder: rank 0, unless the run has nothing to
        # train (a new run's --max_iters 0 or an --epoch_count past the schedule; a resumed run
        # already there, found by resume(), after it took the folder's lock and removed a killed
        # run's temporaries): it checks its options, data and networks, and leaves the folder as
        # it was (not made, when it was not there).
        self.writes = self.main and (opt.continue_train or self._nothing_to_train() is None)
        self.stale_removed = []  # temporary files of saves a killed run never finished
        if self.writes:
            os.makedirs(self.dir, exist_ok=True)
            self.stale_removed = remove_stale_temporaries(self.dir)
        self.model = model_from_options(opt)
        self.choices_adopted = choice_cache.adopt(self.model.device)  # before any kernel is timed
        self.loss_log = LossLog(self.dir, self.model.loss_names) if self.main else None
        self.web_page = TrainingPage(self.dir, opt.name, opt.display_winsize) if self.main and not opt.no_html else None
        self.pictures_off: set[str] = set()  # picture outputs that could not be written (_write_picture)

    # -- set-up --------------------------------------------------------------
    def describe(self) -> None:
        opt, model, world = self.opt, self.model, self.ranks.world_size
        if self.writes:  # the table fastgan.train printed before the data was read, as the reference writes it
            entries = self.table_entries or reference_table_entries(opt.arch, model.device)
            write_options_table(os.path.join(self.dir, f"{opt.phase}_opt.txt"), self.command_options, entries)
        where = f"{world} ranks ({model.device.type}), batch {opt.batch_size} per rank" if world > 1 \
            else f"{model.device}"
        images, batch, batches = self.loader.num_images, opt.batch_size * world, len(self.loader)
        per_epoch = f"1 batch of all {images} (a batch holds up to {batch})" if images < batch \
            else f"{batches} {'batch' if batches == 1 else 'batches'} of {batch}"
        epochs = f"epochs {self.progress.epoch}..{self.last_epoch}" if self.progress.epoch <= self.last_epoch \
            else f"no epoch left (the schedule ends with epoch {self.last_epoch})"
        self.log(f"fastgan {opt.arch} on {where}: {images} images, {per_epoch} per epoch, {epochs}")
        hint = "--fast: fastest" if model.levels.is_eager else "--eager: the reference's path; --fast: fastest"
        self.log(f"speed levels: {model.levels.describe()} ({hint})")
        if opt.fast:
            self.log(fast_note(model.device, model.levels))
        if model.levels.accelerate and sizes_vary(opt.preprocess):
            self.log(size_class_note(opt.preprocess))
        if self.stale_removed:
            self.log(f"removed {len(self.stale_removed)} unfinished checkpoint file(s) a killed run left in "
                     f"{self.dir}: {', '.join(self.stale_removed)}")
        if self.choices_adopted:
            self.log(choice_cache.adopted_note(self.choices_adopted, model.device, "run"))
        for name, net in model.nets.items():
            if opt.verbose:  # as the reference: the net, then its size
                self.log(str(net))
            self.log(f"[Network {name}] Total number of parameters : {count_parameters(net) / 1e6:.3f} M")
        if self.writes:
            # at once: fastgan.test reads the model's options from it
            write_file_atomically(os.path.join(self.dir, "train_opt.json"),
                                  lambda f: f.write(json.dumps(opt.as_dict(), indent=1, default=str).encode()))
            self.loss_log.start()

    @property
    def last_epoch(self) -> int:
        return self.opt.n_epochs + self.opt.n_epochs_decay

    def resume(self) -> None:
        """--continue_train. As the reference's when the command names other networks or another
        first epoch than the run's (--epoch other than latest, --load_iter, an --epoch_count the
        saved run did not start at): those networks, fresh optimizers, the schedule from
        --epoch_count. Otherwise the exact training state if there is one, its learning-rate
        schedule following this command's options where they differ from the run's; else the
        latest networks.

        Every rank reads the files, so the checkpoint folder must be one every node sees.
        """
        opt = self.opt
        state = read_training_state(self.dir)
        saved = {} if state is None else state.get("options", {})
        first = saved.get("epoch_count", 1)
        if opt.epoch != "latest" or opt.load_iter > 0 or opt.epoch_count not in (1, first):
            self._continue_from_networks("" if state is None else f"; {STATE_FILE} unused: --epoch, --load_iter "
                                         "or --epoch_count asks for the reference's continue")
            return
        progress = None if state is None else restore_training_state(self.model, state, self.ranks.rank)
        found = self.ranks.all_gather(None if progress is None else vars(progress))
        if any(f != found[0] for f in found):
            raise CheckpointError(f"the ranks found different training states in {self.dir} "
                                  f"({found}): --continue_train needs it on storage that every node reads")
        if progress is None:
            self._continue_from_networks(f" (no {STATE_FILE}: optimizer and schedule restart)")
            return
        self.progress = progress
        self._saved_records = (progress.total_iters, state.get("loss_log_records"))  # (truncated in _run)
        if self.main and self.web_page is not None and progress.batch > 0:
            self.web_page.resume_epoch(progress.epoch)
        self.log(f"resumed from {self.dir}/{STATE_FILE}: epoch {progress.epoch}, "
                 f"batch {progress.batch}, total_iters {progress.total_iters}")
        if self.main:
            self._say_replaced_latest_networks(state)
        if not self._end_an_epoch_past_this_dataset(state):
            self._count_batches_as_this_run(state)
        self._follow_schedule_options(saved)
        levels = state.get("levels")
        if levels is None:  # a state saved by an earlier fastgan
            self.log(f"note: {STATE_FILE} does not say which speed levels the run had (an earlier fastgan saved "
                     f"it): where they were not these ({self.model.levels.describe()}), the losses from here are not "
                     "exactly those the run would have had")
        elif levels != dataclasses.asdict(self.model.levels):
            self.log(f"speed levels {self.model.levels.describe()}, the run's {describe_saved(levels)}: it goes "
                     "on from its state, with the losses of these levels, not exactly those it would have had")
        self._note_loader_and_threads(state)
        before, now = saved.get("seed", self.opt.seed), self.opt.seed
        if before != now:  # the data stream is drawn from (seed, epoch, index)
            mid = (f"; the rest of epoch {progress.epoch} takes its images in that order's, so some of them train "
                   "twice in it and others not at all") if progress.batch > 0 else ""
            self.log(f"note: --seed {now}, the run's {before}: its data order, crops and flips follow seed {now} "
                     f"from here{mid} (--seed {before} keeps the run's)")
        emptied = self._empty_pools_of_another_size(saved)
        before, now = saved.get("pool_size", self.opt.pool_size), self.opt.pool_size
        if before != now and self.model.pools() and not emptied:
            self.log(f"--pool_size {now}, the run's {before}: " + (
                f"each image pool keeps the first {now} fakes it saved" if now < before else
                f"each image pool keeps the fakes it saved and fills up to {now}"))

    def _empty_pools_of_another_size(self, saved: dict) -> bool:
        """Square images of another side than the run's (another --crop_size, or --load_size under
        --preprocess resize), or squares where the run's images kept their own sizes: the image
        pools' saved fakes are of other sizes than this run's, which one device ring cannot hold
        nor one batch stack, so the pools start empty, as the reference's do at every continue
        (it saves none). Whether they were emptied."""
        opt, pools = self.opt, self.model.pools()
        side = square_side(opt.preprocess, opt.crop_size, opt.load_size)
        if not pools or opt.pool_size == 0 or side is None:  # (the list pool takes any sizes)
            return False
        preprocess = saved.get("preprocess", opt.preprocess)
        run_side = square_side(preprocess, saved.get("crop_size", opt.crop_size), saved.get("load_size", opt.load_size))
        if run_side == side:
            return False
        run = f"the run's images kept their own sizes (--preprocess {preprocess})" if run_side is None else \
            f"the run's {run_side}x{run_side}"
        for pool in pools.values():
            pool.clear()
        self.log(f"note: images of {side}x{side}, {run}: the image pools start empty (their saved fakes are of the "
                 "run's sizes)")
        return True

    def _note_loader_and_threads(self, state: dict) -> None:
        """A loader or a CPU thread count other than the run's (--loader auto picks by the free
        memory of the moment; torch's threads default to the cores): the run goes on, its losses
        not bitwise those it would have had; so do other back ends of fastgan's ops (fastgan._C
        built since the run, or not loaded now). (A state saved by an earlier fastgan has none.)"""
        before, now = state.get("loader"), getattr(self.loader, "kind", None)
        if before and now and before != now and "dali" in (before, now):  # (cache and torch: the same pixels)
            self.log(f"note: loader {now}, the run's {before}: DALI resizes with other rounding than PIL's, so the "
                     f"losses from here are not exactly those the run would have had (--loader {before} keeps them)")
        before, now = state.get("cpu_threads"), torch.get_num_threads()
        if self.model.device.type == "cpu" and before and before != now:
            self.log(f"note: {now} CPU threads, the run's {before}: sums add in another order, so the losses from "
                     f"here are not bitwise those the run would have had (OMP_NUM_THREADS={before} keeps them)")
        before, now = state.get("backends"), op_backends(self.model)
        if before and before != now:  # e.g. fastgan._C built since, or not loaded now
            changed = ", ".join(f"{op} {now.get(op)} (the run's {before.get(op)})" for op in sorted({*before, *now})
                                if before.get(op) != now.get(op))
            self.log(f"note: fastgan.ops back ends {changed}: they round otherwise, so the losses from here are not "
                     "bitwise those the run would have had")

    def _say_replaced_latest_networks(self, state: dict) -> None:
        """latest_net_*.pth files that differ from the training state's networks (put there by
        hand, or by another trainer in the same folder; or written by a save that stopped before
        the state): the run resumes from the state, and says how to take the files instead."""
        differ, unreadable = [], []
        for name, saved in state["model"]["nets"].items():
            path = os.path.join(self.dir, f"latest_net_{name}.pth")
            if not os.path.exists(path):  # (the next save writes it)
                continue
            try:
                found = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001  (a truncated or damaged file: nothing to compare)
                unreadable.append(f"{os.path.basename(path)} ({first_line(e, 80)})")
                continue
            same = isinstance(found, dict) and found.keys() == saved.keys() and all(
                isinstance(found[k], torch.Tensor) and torch.equal(found[k], v.cpu()) for k, v in saved.items())
            if not same:
                differ.append(os.path.basename(path))
        if differ:  # (after a save of the state alone, an epoch's end or --save_by_iter, the state's are newer)
            self.log(f"note: {', '.join(differ)} {'differs' if len(differ) == 1 else 'differ'} from the networks in "
                     f"{STATE_FILE}, which this run resumes from (the newer after a save of the state alone); to "
                     f"continue from the files instead (the newer where a save wrote them but failed to write the "
                     f"state, or another trainer's), move {STATE_FILE} away and run again, as the reference does")
        if unreadable:
            self.log(f"note: {'; '.join(unreadable)} cannot be read: this run resumes from the networks in "
                     f"{STATE_FILE}, and its next save writes the file again")

    def _end_an_epoch_past_this_dataset(self, state: dict) -> bool:
        """A saved position past the end of this dataset's epoch (the dataset shrank, or
        --max_dataset_size did: its batches before the last, which may be short, hold more
        images than the epoch): the epoch ends, the next trains, and the run says so."""
        p = self.progress
        saved_global = saved_global_batch(state, self.opt.batch_size)
        if p.batch == 0 or (p.batch - 1) * saved_global < self.loader.num_images:
            return False
        self.log(f"note: the saved run had trained {p.batch} batches of {saved_global} of epoch {p.epoch}, more than "
                 f"the {self.loader.num_images} images this dataset holds (it changed, or --max_dataset_size did): "
                 f"epoch {p.epoch} ends now, and epoch {p.epoch + 1} trains on it")
        p.batch = len(self.loader)
        return True

    def _count_batches_as_this_run(self, state: dict) -> None:
        """progress.batch counts the saved run's global batches (--batch_size x its ranks). A
        run resumed with another global batch (another --batch_size, or number of ranks)
        continues the epoch after the images already trained: the epoch's order does not
        depend on the batch, so the first `batch` of this run's batches are those images,
        rounded down to a whole batch (and the run says how many images then train twice)."""
        p = self.progress
        saved_global = saved_global_batch(state, self.opt.batch_size)
        global_batch = self.opt.batch_size * self.ranks.world_size
        if p.batch == 0 or saved_global == global_batch:
            return
        images = p.batch * saved_global  # whole batches: the short last one ends the epoch
        if images >= self.loader.num_images:  # (its last batch, or this dataset is smaller)
            p.batch = len(self.loader)
            self.log(f"the saved run trained {saved_global} images per iteration, this one {global_batch}: its "
                     f"{images} images of epoch {p.epoch} cover the {self.loader.num_images} this dataset holds: "
                     f"epoch {p.epoch} ends now, and epoch {p.epoch + 1} trains on it")
            return
        p.batch = images // global_batch
        again = images - p.batch * global_batch
        where = (f"continues after its first {p.batch * global_batch} images" if p.batch
                 else "starts again from its first image")
        self.log(f"the saved run trained {saved_global} images per iteration, this one {global_batch}: epoch "
                 f"{p.epoch} {where}"
                 + (f" ({again} of the {images} it trained train again: {images} is not a multiple of "
                    f"{global_batch})" if again else ""))

    def _continue_from_networks(self, why: str) -> None:
        label = checkpoint_label(self.opt)
        missing = [f"{label}_net_{name}.pth" for name in self.model.nets
                   if not os.path.exists(os.path.join(self.dir, f"{label}_net_{name}.pth"))]
        if missing:
            no_state = "" if os.path.exists(os.path.join(self.dir, STATE_FILE)) else f" and no {STATE_FILE}"
            raise CheckpointError(f"--continue_train: {self.dir} holds no {', '.join(missing)}{no_state}; train "
                                  "without --continue_train first, or name saved networks with --epoch / --load_iter")
        self.model.load_networks(label, self.dir)
        which = f"epoch {label}'s" if str(label).isdigit() else f"the {label}"
        self.log(f"continuing from {which} networks in {self.dir}, epoch {self.opt.epoch_count}{why}")

    def _follow_schedule_options(self, saved: dict) -> None:
        """After an exact resume: the run's first epoch is the saved one (only the state knows
        it); the other schedule options are this command's. Where any differs from the run's,
        the schedulers restart from them, stepped through the epochs done."""
        first = saved.get("epoch_count", self.opt.epoch_count)
        changed = {k: (saved[k], getattr(self.opt, k)) for k in SCHEDULE_OPTIONS
                   if k in saved and saved[k] != getattr(self.opt, k)}
        if first == self.opt.epoch_count and not changed:
            return  # the loaded schedulers are this command's
        self.opt = self.model.opt = self.opt.replace(epoch_count=first)
        self.model.schedulers = restart_schedules(self.model.optimizers, self.opt, self.progress.epoch - first)
        if changed:
            self.log("learning-rate schedule from this command's options ("
                     + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
                     + f"): lr {self.model.learning_rate:.7f} in epoch {self.progress.epoch}")

    # -- saving --------------------------------------------------------------
    def save(self, labels) -> None:
        """Rank 0 writes; in a data-parallel run every rank takes part (its RNGs and pools go in)."""
        rank_states = self.ranks.gather_to_main(rank_state(self.model)) if self.ranks.world_size > 1 else None
        # (on every rank: whether to stop at this save, and to save again at the end, is agreed)
        self.state_saved_at = self.progress.iteration
        if "latest" in labels:
            self.latest_saved_at = self.progress.iteration
        if not self.main:
            return
        stop = self.stop_request
        with stop.saving() if stop is not None else contextlib.nullcontext():
            for label in labels:
                self.model.save_networks(label, self.dir)
            save_training_state(self.model, self.progress, self.dir, rank_states, self.loss_log.records,
                                getattr(self.loader, "kind", None))
            if stop is not None and stop.requested and "latest" not in labels:
                # the run is stopping, and a second signal would make this save its last: the
                # latest networks then go with the state (a state-only save at an epoch's end)
                self.model.save_networks("latest", self.dir)
        choice_cache.record(self.model.device)

    # -- the loop ------------------------------------------------------------
    def run(self) -> dict:
        """Trains, holding the run folder's lock (fastgan/engine/run_lock.py) until it ends;
        RunFolderInUse, before anything is written, while another run holds it. A run that
        writes nothing (a new one with nothing to train; ranks but the first) takes no lock."""
        locked = self.writes
        if locked:
            lock_run_folder(self.dir)
        try:
            return self._run()
        finally:
            if locked:
                unlock_run_folder(self.dir)

    def _run(self) -> dict:
        if self.opt.continue_train:
            self.resume()
            self.writes = self.writes and self._nothing_to_train() is None
            if self.writes and self._saved_records is not None:
                self.loss_log.truncate_after(*self._saved_records)  # the records after the save train again
        elif self.writes:
            self._note_an_earlier_run()
        self.describe()
        tally = RunTally(start=time.perf_counter(), stopped=self._nothing_to_train())
        bar = self._progress_bar(tally)
        # images of sizes of their own: the kernels measured once per size class, not per size
        by_size_class = choices_by_size_class() if sizes_vary(self.opt.preprocess) else contextlib.nullcontext()
        with StopRequest(rank_label(self.ranks)) as stop, bar, by_size_class:  # the bar closes before any error
            self.stop_request = stop
            try:
                while self.progress.epoch <= self.last_epoch and tally.stopped is None:
                    self._train_epoch(stop, bar, tally)
            except DatasetError:
                # a bad file: keep what trained before it (not with several ranks: saving gathers
                # from every rank, and the others wait in this iteration's collectives)
                if tally.images and self.ranks.world_size == 1:
                    self.save(["latest"])
                    self.log(f"saved the {tally.images} images trained before the file below; replace or "
                             "remove it, then resume with --continue_train")
                raise
            if self.model.device.type == "cuda":  # the queued iterations are part of the run's time
                torch.cuda.synchronize(self.model.device)
            tally.seconds = time.perf_counter() - tally.start
            self._save_at_the_end(stop, tally)
        if self.writes:  # the records since the last redraw (at most one a CURVE_REDRAW_SECONDS)
            self._write_picture("loss_curve.png", lambda: self.loss_log.draw_curve(at_most_every=0))
        return self._summary(tally)

    def _note_an_earlier_run(self) -> None:
        """A run started afresh in a folder that holds another's training state is told so: its
        saves replace that run's files (as the reference's do, without a word)."""
        if os.path.exists(os.path.join(self.dir, STATE_FILE)):
            self.log(f"note: {self.dir} holds an earlier run ({STATE_FILE}, latest_net_*); this run starts afresh "
                     "and its saves replace those files (--continue_train resumes that run; another --name keeps "
                     "both)")

    def _nothing_to_train(self) -> str | None:
        """Why a resumed run has nothing left to do, if it has not."""
        opt, p = self.opt, self.progress
        if opt.max_iters is not None and p.iteration >= opt.max_iters:
            return f"already at --max_iters {opt.max_iters} (iteration {p.iteration})" if opt.continue_train else \
                f"--max_iters {opt.max_iters}: nothing to train"
        if p.epoch > self.last_epoch:
            return (f"nothing to train: epoch {p.epoch} is past the schedule's last, {self.last_epoch} "
                    "(--n_epochs + --n_epochs_decay)")
        return None

    def _progress_bar(self, tally: RunTally) -> tqdm:
        """Batches of the whole schedule (up to --max_iters), those trained before this run done."""
        opt, p = self.opt, self.progress
        done = (p.epoch - opt.epoch_count) * len(self.loader) + p.batch
        total = (self.last_epoch - opt.epoch_count + 1) * len(self.loader)
        if opt.max_iters is not None:
            total = min(total, done + max(0, opt.max_iters - p.iteration))
        total = max(0, total)
        bar = tqdm(total=total, initial=min(done, total), unit="it", dynamic_ncols=True, mininterval=1.0,
                   disable=not self.main)
        if tally.stopped is None:  # the first iteration measures kernels, compiles, captures: slow
            bar.set_description_str("first iteration")
        return bar

    def _train_epoch(self, stop: StopRequest, bar: tqdm, tally: RunTally) -> None:
        """The rest of the current epoch, or up to a stop (a signal, --max_iters)."""
        opt, model, p = self.opt, self.model, self.progress
        step = opt.batch_size * self.ranks.world_size  # the reference's total_iters step
        fetch_start = epoch_start = time.perf_counter()
        for batch in self.loader.epoch_batches(p.epoch, skip=p.batch):
            step_start = time.perf_counter()  # the reference's iter_start_time
            waited = step_start - fetch_start  # its t_data: this batch's wait
            for name in model.input_names if sizes_vary(opt.preprocess) else ():
                check_image_fits(opt, batch[name], batch[f"{name}_paths"][0])
            images = self._share_of_the_batch(p.batch, batch)
            losses = model.step(*(batch[k] for k in model.input_names))
            # images of this iteration over all ranks; a stop asked of any rank stops all
            n, stop_signal = self.ranks.agree(images, stop.signal or 0)
            if tally.images == 0:
                bar.set_description_str("")
            p.batch += 1
            p.iteration += 1
            p.total_iters += step
            tally.images += n
            bar.update(1)
            self.after_iteration(losses, step, images, bar, tally.rate, (step_start, waited))
            if not stop_signal and self.state_saved_at == p.iteration:
                stop_signal = self._signal_during_the_save(stop)  # stop at what was just saved
            if stop_signal:  # the same status on every rank, whichever was signalled
                tally.stopped, tally.signum = "stopped by signal", stop_signal
            elif opt.max_iters is not None and p.iteration >= opt.max_iters:
                tally.stopped = f"reached --max_iters {opt.max_iters}"
            if tally.stopped:
                break
            fetch_start = time.perf_counter()
        if tally.stopped and p.batch < len(self.loader):
            return
        self.end_epoch(epoch_start)  # also when the stop came with the epoch's last batch
        # a signal during the epoch's end (its save): stop at this boundary, unless it was the
        # last epoch's (the run ends; _save_at_the_end gives it the signal's exit status)
        if tally.stopped is None and p.epoch <= self.last_epoch:
            stop_signal = self._signal_during_the_save(stop)
            if stop_signal:
                tally.stopped, tally.signum = "stopped by signal", stop_signal

    def _signal_during_the_save(self, stop: StopRequest) -> int:
        """The signal (0: none) a rank got while the save at this iteration or epoch end was
        written, after the iteration's own check: the run stops there rather than train one
        more iteration and save again. Every rank asks, as every rank takes part in a save."""
        return self.ranks.agree(0, stop.signal or 0)[1]

    def _save_at_the_end(self, stop: StopRequest, tally: RunTally) -> None:
        # the same on every rank (the count is over all of them); not again where the epoch's
        # end, or a --save_latest_freq save, has just saved this iteration
        if tally.images and self.latest_saved_at != self.progress.iteration:
            self.save(["latest"])  # still under StopRequest: a signal now waits for the save
        # a signal during that save (on any rank: every rank waits here for rank 0's write)
        _, late_signal = self.ranks.agree(0, (stop.signal or 0) if tally.signum is None else 0)
        if late_signal:  # saved: the run ends with the signal's status
            tally.signum = late_signal

    def _summary(self, tally: RunTally) -> dict:
        p, elapsed = self.progress, tally.seconds
        summary = {"images": tally.images, "seconds": elapsed,
                   "images_per_second": tally.images / elapsed if elapsed > 0 else 0.0,
                   "epoch": p.epoch, "iteration": p.iteration, "stopped": tally.stopped, "signal": tally.signum}
        # (a new run that trained nothing saved nothing: a folder's earlier run stays as it was)
        saved = self.state_saved_at is not None or self.opt.continue_train
        self.log(f"{tally.stopped or 'finished'}: {tally.images} images in {elapsed:.1f} s "
                 f"({summary['images_per_second']:.2f} images/s); "
                 + (f"checkpoints in {self.dir}" if saved else "nothing saved")
                 + ("; resume with --continue_train" if tally.stopped and tally.images else ""))
        return summary

    def _share_of_the_batch(self, index: int, batch: dict) -> int:
        """This rank's real images of the epoch's batch `index` (a padding copy is not one).
        In a data-parallel run it also sets this rank's weight of its losses, so that an
        uneven last batch trains as one batch (fastgan.engine.distributed)."""
        world = self.ranks.world_size
        if world == 1:
            return batch["A"].shape[0]
        shares = rank_shares(self.loader.num_images, self.opt.batch_size, world, index)
        self.model.gradient_shares.weight = world * shares[self.ranks.rank] / sum(shares)
        return shares[self.ranks.rank]

    def after_iteration(self, losses: dict, step: int, images: int, bar, rate, timing: tuple) -> None:
        """`step`: what the iteration added to total_iters; `images`: this rank's real images;
        `rate()`: images/s so far (called once the losses are read); `timing`: when the step
        started and how long its batch was waited for (seconds)."""
        opt, p = self.opt, self.progress
        if crossed(p.total_iters, step, opt.print_freq):
            values = dict(zip(losses, self.ranks.mean([float(v) for v in losses.values()], images)))
            step_start, waited = timing
            rate = rate()
            if self.main:
                record = {"epoch": p.epoch, "epoch_iter": p.batch * opt.batch_size * self.ranks.world_size,
                          "total_iters": p.total_iters, "lr": self.model.learning_rate,
                          "images_per_second": rate,
                          # the reference's t_comp (per image, up to the losses read) and t_data
                          "seconds_per_image": (time.perf_counter() - step_start) / max(images, 1),
                          "data_seconds": waited, **values}
                self.loss_log.append(record)
                # before the line: printing it redraws the bar, with these figures
                bar.set_postfix_str(f"ep {p.epoch} {rate:.1f} img/s " +
                                    " ".join(f"{k} {v:.3f}" for k, v in values.items()), refresh=False)
                self.log(reference_loss_line(record, self.loss_log.loss_names))  # printed too, as the reference does
                self._write_picture("loss_curve.png", self.loss_log.draw_curve)
        if self.main and crossed(p.total_iters, step, opt.display_freq):
            path = os.path.join(self.dir, "samples", f"epoch{p.epoch:03d}_iter{p.total_iters:08d}.png")
            self._write_picture("samples/", lambda: save_sample_grid(self.model.visuals, self.model.visual_names,
                                                                     path))
            if self.web_page is not None:
                self._write_picture("web/", lambda: self.web_page.display(
                    self.model.visuals, self.model.visual_names, p.epoch,
                    save_result=crossed(p.total_iters, step, opt.update_html_freq)))
        if crossed(p.total_iters, step, opt.save_latest_freq):
            self.log(f"saving the latest model (epoch {p.epoch}, total_iters {p.total_iters})")
            self.save([f"iter_{p.total_iters}" if opt.save_by_iter else "latest"])

    def _write_picture(self, what: str, write) -> None:
        """A picture output (the loss curve, samples/, web/): one that cannot be written (a full
        disk, a folder that is a file) is said once and left off for the rest of the run, which
        trains on and saves its networks."""
        if what in self.pictures_off:
            return
        try:
            write()
        except OSError as e:
            self.pictures_off.add(what)
            self.log(f"{what} not written from now on ({os_error_line(e)}); training goes on")

    def end_epoch(self, started: float) -> None:
        """The reference's end of an epoch, and its lines (for scripts that watch them); `started`:
        when this run began the epoch (perf_counter)."""
        p = self.progress
        epoch = p.epoch
        old_lr = self.model.learning_rate
        lr = self.model.update_learning_rate()
        p.epoch, p.batch = epoch + 1, 0
        if self.web_page is not None:
            self.web_page.start_epoch()
        labels = ["latest", epoch] if epoch % self.opt.save_epoch_freq == 0 else []
        if labels:
            self.log(f"saving the model at the end of epoch {epoch}, iters {p.total_iters}")
        self.save(labels)
        self.log(f"End of epoch {epoch} / {self.last_epoch} \t Time Taken: {int(time.perf_counter() - started)} sec")
        self.log(f"learning rate {old_lr:.7f} -> {lr:.7f}")


def generator_for_scoring(model) -> torch.nn.Module:
    """The A→B generator: G_A for CycleGAN, G for Pix2Pix (the plain net, never a rank's wrapper)."""
    return model.nets["G_A"] if "G_A" in model.nets else model.nets["G"]
