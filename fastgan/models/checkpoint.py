"""Reference-format checkpoint files: load with clear errors, export, save atomically.

A checkpoint file holds a plain state_dict, keys without any `module.`
(DataParallel/DDP) or `_orig_mod.` (torch.compile) prefix.
"""

import os
import re
import socket
import tempfile
from collections import OrderedDict

import torch
import torch.nn as nn

from fastgan.errors import replace_file
from fastgan.models.checkpoint_hints import hints

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_INSTANCE_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")
_MAX_KEYS_SHOWN = 25


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the network it is loaded into."""


def strip_wrapper_prefixes(key):
    """'module._orig_mod.model.1.weight' -> 'model.1.weight'.

    Leading `module.`/`_orig_mod.` are removed however they nest; an inner
    `_orig_mod.` (a compiled submodule) too. An inner `module.` stays: it may be
    a real attribute name.
    """
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key.replace("._orig_mod.", ".")


def unwrap(net):
    """The plain module inside DataParallel / DistributedDataParallel / torch.compile."""
    while True:
        if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            net = net.module
        elif isinstance(getattr(net, "_orig_mod", None), nn.Module):
            net = net._orig_mod
        else:
            return net


def export_state_dict(net):
    """What a checkpoint file holds: a CPU copy of the state_dict, no wrapper prefixes, in
    contiguous (NCHW) memory whatever layout the run trained in, as the reference's files."""
    return OrderedDict(
        (strip_wrapper_prefixes(k), v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True))
        for k, v in unwrap(net).state_dict().items()
    )


def save_checkpoint_file(state_dict_or_obj, path):
    """torch.save to `path` atomically: the file is either the old one or complete."""
    return write_file_atomically(path, lambda f: torch.save(state_dict_or_obj, f))


def write_file_atomically(path, write) -> str:
    """write(f) into a binary file that becomes `path` at once: the file is either the old
    one or complete (a run killed or a disk filled while writing leaves no half file).

    Writes a temporary file in the same folder (same filesystem, so the rename is
    atomic), fsyncs it, then os.replace()s it over `path`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_temporary_prefix(path), suffix=TEMPORARY_SUFFIX)
    try:
        # mkstemp creates mode 0600; give the file the mode a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        except RuntimeError as e:  # torch's zip writer reports a failed write (a full disk) so
            failed_write = _os_error_in(e)
            if failed_write is None:
                raise
            raise OSError(failed_write.errno, failed_write.strerror, path) from e
        except OSError as e:  # the write, flush or close of the temporary file: say which file
            if e.filename is not None:
                raise
            raise OSError(e.errno, e.strerror, path) from e
        replace_file(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)  # make the rename itself durable
    return path


TEMPORARY_SUFFIX = ".tmp"


def _temporary_prefix(path: str) -> str:
    # The writer's host and pid in the name let remove_stale_temporaries tell a file a killed
    # process left behind from one a live process (this run's, another run's) is writing.
    return f".{os.path.basename(path)}.{socket.gethostname()}.{os.getpid()}."


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the temporary files of saves that never finished (a process killed mid-save by
    SIGKILL or the OOM killer) which processes of this host, no longer alive, left in `folder`.
    Returns their names."""
    pattern = re.compile(rf"\..+\.{re.escape(socket.gethostname())}\.(\d+)\.[^.]*{re.escape(TEMPORARY_SUFFIX)}")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            continue
        removed.append(name)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a pid this system cannot hold): leave its file
    return True


def _os_error_in(e: BaseException) -> OSError | None:
    """The OSError among the causes and contexts of `e`, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _umask():
    # Reading it from /proc leaves the process umask alone; os.umask() would
    # briefly change it for every thread (checkpoints may be saved in the background).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the data is synced
    finally:
        os.close(fd)


def read_checkpoint_file(path: str) -> dict:
    """torch.load of a network file (tensors only); CheckpointError of one line for a file that
    is not one (a folder, truncated, empty, a Git LFS pointer, another format)."""
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder, not a network file (.pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # pickle, zip and EOF errors: torch.load raises many kinds
        raise CheckpointError(f"{path}: {unreadable_network_file(path, e)}") from None


def unreadable_network_file(path: str, error: Exception) -> str:
    """What the file is, in words, that torch.load(weights_only=True) failed on with `error`."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (git lfs pull)"
    if not head:
        return "empty"
    if head.lstrip().startswith(b"<"):
        return "a web page or other markup (HTML, XML), not a network file"
    if "global" in str(error).lower():  # the weights-only unpickler met a class or function
        return "it holds Python objects besides tensors, refused (loading them could run any code)"
    return f"not a PyTorch network file, or truncated ({type(error).__name__})"


def load_reference_checkpoint(net, path_or_state_dict, name: str = "<state_dict>"):
    """Load a reference-format checkpoint (a path or a state_dict) into `net`, strictly;
    `name`: what the errors call a state_dict (a path names itself).

    Removes `_metadata` and wrapper prefixes, drops running-stat keys that old
    releases saved for InstanceNorm layers without running stats, then loads.
    Raises CheckpointError naming missing, unexpected and mis-shaped keys, with
    a hint at the likely cause. Returns `net`.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = os.fspath(path_or_state_dict)
        state_dict = read_checkpoint_file(source)
    else:
        source, state_dict = name, path_or_state_dict
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{source}: expected a state_dict, got {type(state_dict).__name__}")
    entries = {k: v for k, v in state_dict.items() if k != "_metadata"}
    if entries and not any(isinstance(v, torch.Tensor) for v in entries.values()):
        if {"model", "progress"} <= set(entries):
            raise CheckpointError(f"{source} is a fastgan training state (training_state.pt), which a run resumes "
                                  "from, not a network: give one of the run's network files ({epoch}_net_{name}.pth)")
        keys = ", ".join(map(str, list(entries)[:6])) + (", ..." if len(entries) > 6 else "")
        nested = [k for k, v in entries.items()
                  if isinstance(v, dict) and v and all(isinstance(t, torch.Tensor) for t in v.values())]
        inside = f"; a network's weights may be the tensors under {nested[0]!r}: save those alone" if nested else ""
        raise CheckpointError(f"{source} holds no network weights: its entries ({keys}) are not tensors{inside}")

    target = unwrap(net)
    # Rebuilding the dict drops `_metadata` (attribute or key). Without version
    # metadata, BatchNorm fills in a missing num_batches_tracked, as for the
    # reference, which deletes `_metadata` too.
    state_dict = OrderedDict(
        (strip_wrapper_prefixes(k), v) for k, v in state_dict.items() if k != "_metadata"
    )
    as_saved = _shapes(state_dict)  # hints judge the file before any key is dropped
    _drop_stray_instance_norm_stats(target, state_dict)

    problems = _compare(target, state_dict)
    if any(problems):
        raise CheckpointError(_describe(source, target, as_saved, *problems))
    try:
        target.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"cannot load {source} into {type(target).__name__}: {e}") from e
    return net


def _drop_stray_instance_norm_stats(net, state_dict):
    """The reference's patch for checkpoints of PyTorch before 0.4: running stats of instance
    norms that track none are dropped (also of fastgan.nn.FusedInstanceNormAct, which an
    accelerated net holds in their place: matched by name, fastgan.nn builds on this package)."""
    for name, module in net.named_modules():
        if not (isinstance(module, nn.modules.instancenorm._InstanceNorm) or "InstanceNorm" in type(module).__name__):
            continue
        for stat in _INSTANCE_NORM_STATS:
            if getattr(module, stat, None) is None:
                state_dict.pop(f"{name}.{stat}" if name else stat, None)


def _compare(net, state_dict):
    """(missing, unexpected, shape mismatches) as strict loading would judge them."""
    expected = net.state_dict()
    # BatchNorm layers fill in a missing num_batches_tracked themselves.
    optional = {
        f"{name}.num_batches_tracked" if name else "num_batches_tracked"
        for name, m in net.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and isinstance(v, torch.Tensor) and v.shape != expected[k].shape
    ]
    return missing, unexpected, mismatched


def _key_list(keys):
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _describe(source, net, ckpt_shapes, missing, unexpected, mismatched):
    lines = [f"cannot load checkpoint {source} into {type(net).__name__}:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_key_list(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_key_list(unexpected)}")
    if mismatched:
        shown = [f"{k} checkpoint {list(a)} vs network {list(b)}" for k, a, b in mismatched]
        lines.append(f"  shape mismatches ({len(shown)}): {_key_list(shown)}")
    causes = hints(ckpt_shapes, _shapes(net.state_dict()), missing, unexpected, mismatched)
    lines += [f"  hint: {h}" for h in causes]
    return "\n".join(lines)


def _shapes(state_dict):
    return {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
