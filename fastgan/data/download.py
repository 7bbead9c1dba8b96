"""The reference's public datasets, fetched from their published addresses.

    python -m fastgan.data download horse2zebra        # -> ./datasets/horse2zebra/trainA ...
    python -m fastgan.data download facades            # -> ./datasets/facades/train, val, test

CycleGAN sets are zip files of unpaired folders (trainA, trainB, testA, testB),
pix2pix sets tar.gz files of aligned A|B images (train, val, test), both under
http://efrosgans.eecs.berkeley.edu (the reference's download scripts). facades
and maps exist in both forms: the pix2pix one unless --arch cyclegan.
cityscapes is refused in either form with the reference's licence note: it
comes from https://cityscapes-dataset.com, prepared by the reference's
prepare_cityscapes_dataset.py, not from that server.

The archive goes to DIR/NAME.<ext>.part first: an interrupted download resumes
from where it stopped (HTTP Range) when the command runs again (after Ctrl-C too: each
read writes what has arrived at once), unless the file on the server has changed since
(If-Range: then it downloads anew), and a download counts as complete only at
the size the server announced (Content-Length or Content-Range). The archive is then
unpacked into DIR/NAME (members that would land outside it are refused) and removed,
and a marker file (COMPLETE_MARKER, the archive's address) left in DIR/NAME says the
set there is complete. A folder holding only some of the layout's folders, without it,
is said and left alone (some archives lack a folder).
Every failure is one DatasetError line: unreachable server, refused request, short
download, unexpected archive.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile

from tqdm import tqdm

from fastgan.data.errors import DatasetError
from fastgan.file_lock import LockHeld, drop_lock, take_lock

HOST = "http://efrosgans.eecs.berkeley.edu"
# (the reference's cyclegan script also takes the mini sets and grumpifycat, which its list omits)
CYCLEGAN_SETS = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
                 "ukiyoe2photo", "vangogh2photo", "maps", "facades", "iphone2dslr_flower", "ae_photos",
                 "grumpifycat", "mini", "mini_pix2pix", "mini_colorization")
PIX2PIX_SETS = ("facades", "maps", "edges2shoes", "edges2handbags", "night2day")
LAYOUTS = {"cyclegan": ("trainA", "trainB", "testA", "testB"), "pix2pix": ("train", "val", "test")}
# sets under the cyclegan address whose folders are not A/B: aligned A|B pairs, colour photos
SPLIT_FOLDER_SETS = ("mini_pix2pix", "mini_colorization")
# Sets the reference's scripts name but do not fetch: they print why and where to get them instead.
LICENSED = {
    "cityscapes": "Due to license issue, the Cityscapes dataset cannot be provided from the reference's "
                  "server: download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from "
                  "https://cityscapes-dataset.com and prepare them with the reference's script "
                  "datasets/prepare_cityscapes_dataset.py",
}
CHUNK = 1 << 20
# written into DIR/NAME once its archive is unpacked: the set there is complete (some archives
# lack a folder of the layout: mini_pix2pix has no val/)
COMPLETE_MARKER = ".fastgan_download"
VALIDATOR_SUFFIX = ".validator"  # beside a .part file: the version of the file it holds the start of (fetch)


def source(name: str, arch: str | None = None, host: str = HOST) -> tuple[str, str]:
    """(arch, url) of dataset `name`: the pix2pix archive when both exist, unless arch says otherwise."""
    if name in LICENSED:  # in either form, whatever the arch
        raise DatasetError(LICENSED[name])
    arch = pick_arch(name, arch, {"cyclegan": CYCLEGAN_SETS, "pix2pix": PIX2PIX_SETS}, "dataset", "datasets", host)
    ext = "zip" if arch == "cyclegan" else "tar.gz"
    return arch, f"{host.rstrip('/')}/{arch}/datasets/{name}.{ext}"


def pick_arch(name: str, arch: str | None, known: dict[str, tuple[str, ...]], what: str, whats: str,
              host: str) -> str:
    """The arch whose `known` names hold `name` (a dataset, a pretrained model): pix2pix's
    where both do, unless `arch` says otherwise; a DatasetError naming what there is, else.
    Checks that `host` is an http(s) address too."""
    if arch is None:
        if not any(name in names for names in known.values()):
            raise DatasetError(f"no {what} {name!r}; " + "; ".join(
                f"the {a} {whats} are {', '.join(names)}" for a, names in known.items()))
        arch = "pix2pix" if name in known["pix2pix"] else "cyclegan"
    if arch not in known:
        raise DatasetError(f"unknown --arch {arch!r}; choose cyclegan or pix2pix")
    if name not in known[arch]:
        raise DatasetError(f"no {arch} {what} {name!r}; the {arch} {whats} are {', '.join(known[arch])}")
    if not host.startswith(("http://", "https://")):
        raise DatasetError(f"--host {host!r} is not an http:// or https:// address")
    return arch


def download(name: str, root: str = "./datasets", arch: str | None = None, host: str = HOST,
             log=print) -> str:
    """Fetch dataset `name` into root/name (resuming a partial download) and return that folder.

    The complete archive is removed only once unpacked: one found next to the folder
    means an earlier run stopped while unpacking, and it is unpacked again over what
    that run left (rather than taking a folder holding trainA alone as the dataset)."""
    arch, url = source(name, arch, host)
    there = _already_there(name, root, arch, url, log)  # (a read-only datasets folder included)
    if there is not None:
        return there
    os.makedirs(root, exist_ok=True)
    lock_path = os.path.join(root, f".{name}.download.lock")
    lock = hold_download_lock(lock_path, f"{name} into {root}")
    try:
        return _already_there(name, root, arch, url, log) or _download(name, root, arch, url, log)
    finally:
        drop_lock(lock, lock_path)


def hold_download_lock(path: str, what: str):
    """The lock of one download (take_lock's open file, or None: unlocked where the lock file
    cannot be made or opened, another user's in a shared folder), or a DatasetError naming the
    process that holds it: two at once appended to one .part file, and the first to finish
    renamed it away from the others (every one failed, "stopped at 5666212 of 2883106 bytes")."""
    try:
        return take_lock(path)
    except LockHeld as e:
        raise DatasetError(f"another download of {what} is running ({e.holder}); wait for it to end") from None
    except PermissionError:
        return None


def _layout(name: str, arch: str) -> tuple[str, ...]:
    return LAYOUTS["pix2pix" if name in SPLIT_FOLDER_SETS else arch]


def _already_there(name: str, root: str, arch: str, url: str, log) -> str | None:
    """root/name, said, where there is nothing to download (no archive an unpack left to finish);
    None where there is."""
    layout = _layout(name, arch)
    target = os.path.join(root, name)
    if os.path.exists(os.path.join(root, url.rsplit("/", 1)[1])):
        return None
    present = [d for d in layout if os.path.isdir(os.path.join(target, d))]
    if downloaded_from(target) == url or len(present) == len(layout):
        log(f"{target} already holds {', '.join(present)}; nothing to download")
        return target
    if present:  # some archives lack a folder, and a copy may have been cut short: said, not fetched
        log(f"note: {target} holds {', '.join(present)} but not "
            f"{', '.join(d for d in layout if d not in present)} (the {name} archive may lack them), and no "
            f"finished download of it; nothing downloaded: move {target} away to download {name} again")
        return target
    return None


def _download(name: str, root: str, arch: str, url: str, log) -> str:
    """Fetches (or finishes) and unpacks the archive, under the download's lock."""
    remove_stale_unpacks(root, name, log)
    layout = _layout(name, arch)
    target = os.path.join(root, name)
    archive = os.path.join(root, url.rsplit("/", 1)[1])
    if not os.path.exists(archive):
        fetch(url, archive + ".part", log=log)
        os.replace(archive + ".part", archive)
    unpack(archive, target, layout)
    with open(os.path.join(target, COMPLETE_MARKER), "w", encoding="utf-8") as f:
        f.write(url + "\n")
    os.remove(archive)
    log(f"{name} ({arch}) is in {target}: {', '.join(d for d in layout if os.path.isdir(os.path.join(target, d)))}")
    return target


def downloaded_from(target: str) -> str | None:
    """The address of the archive unpacked into `target` (its COMPLETE_MARKER), if any: facades
    and maps unpack their cyclegan and pix2pix forms into the same folder."""
    return _read_text(os.path.join(target, COMPLETE_MARKER))


def fetch(url: str, part: str, timeout: float = 30.0, log=print) -> None:
    """Complete `part` from `url`: resume at its size with a Range request, check the total size.
    The first answer's validator (a strong ETag, else Last-Modified) is kept beside `part`, and a
    resume sends it as If-Range: a server whose file has changed since then answers with the
    whole new file, which replaces `part`, rather than the rest of the new one after the start
    of the old."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    validator_file = part + VALIDATOR_SUFFIX
    headers = {"Range": f"bytes={have}-"} if have else {}
    validator = _read_text(validator_file) if have else None
    if validator:
        headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            total = _range_total(e.headers.get("Content-Range"))
            if total == have:
                return  # the earlier run had it all
            # longer than the file (or of a file since replaced): it cannot be resumed
            log(f"{part} cannot be resumed: it holds {have} bytes, {url} "
                f"{'has ' + str(total) if total is not None else 'has fewer'}; downloading it again")
            os.remove(part)
            _remove(validator_file)
            return fetch(url, part, timeout, log)
        raise DatasetError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:  # (before HTTPException: RemoteDisconnected is both)
        reason = getattr(e, "reason", e)
        raise DatasetError(f"cannot reach {url} ({reason}); are you offline? Run the command again "
                           f"when the network is back" + (f" (it resumes {part})" if have else "")) from None
    except http.client.HTTPException as e:  # an answer that is not HTTP (BadStatusLine, ...)
        raise DatasetError(f"downloading {url} failed: the server's answer is not HTTP "
                           f"({type(e).__name__}: {str(e).strip()}); check --host") from None
    with response:
        if response.status == 206:
            total = _range_total(response.headers.get("Content-Range"))
        else:  # no range asked, or the server ignored it or has another file now: start over
            if have:
                log(f"{url} answered with the whole file (changed since {part} was begun, or no ranges "
                    "served): downloading it again")
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            _keep_validator(response.headers, validator_file)
        with open(part, "ab" if have else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=os.path.basename(url)) as bar:
            try:
                # what has come, up to CHUNK, written through: a stop, even a kill, keeps it
                while chunk := response.read1(CHUNK):
                    f.write(chunk)
                    f.flush()
                    bar.update(len(chunk))
            except (OSError, urllib.error.URLError, http.client.HTTPException) as e:  # (a chunk cut short)
                raise DatasetError(f"downloading {url} broke off ({e}); run the command again to resume "
                                   f"from {part}") from None
    got = os.path.getsize(part)
    if total is not None and got != total:
        raise DatasetError(f"downloading {url} stopped at {got} of {total} bytes; run the command again "
                           f"to resume from {part}")
    _remove(validator_file)


def _keep_validator(headers, path: str) -> None:
    """What tells this version of the file from a later one (If-Range takes a strong ETag or a
    date), written to `path`; none there: `path` removed (a resume then asks without one)."""
    etag = headers.get("ETag")
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    if validator:
        with open(path, "w", encoding="utf-8") as f:
            f.write(validator)
    else:
        _remove(path)


def _read_text(path: str) -> str | None:
    """A small file's text, stripped; None where it is missing, unreadable or empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _range_total(content_range: str | None) -> int | None:
    """The complete size from a Content-Range header ("bytes 100-199/200" or "bytes */200")."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def unpack_prefix(target: str) -> str:
    """The start of the names of unpack's temporary folders for `target`, beside its archive."""
    return f".unpack-{os.path.basename(target)}-"


def remove_stale_unpacks(root: str, name: str, log) -> None:
    """Removes what unpacks of dataset `name` killed midway left in `root` (gigabytes, hidden):
    called under that download's lock, so no live process is unpacking it (those of other
    datasets, under their own locks, are left alone)."""
    prefix = unpack_prefix(os.path.join(root, name))
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.startswith(prefix) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            log(f"removed {path}, left by an unpack that was stopped")


def unpack(archive: str, target: str, layout: tuple[str, ...]) -> None:
    """Unpack `archive` and move the folder holding the layout's subfolders to `target`
    (replacing what an interrupted unpack left there under the same names)."""
    root = os.path.dirname(os.path.abspath(archive))
    with tempfile.TemporaryDirectory(dir=root, prefix=unpack_prefix(target)) as tmp:
        try:
            if archive.endswith(".zip"):
                with zipfile.ZipFile(archive) as z:
                    for member in z.namelist():
                        _inside(tmp, member, archive)
                    z.extractall(tmp)
            else:
                with tarfile.open(archive) as t:
                    _extract_tar(t, tmp, archive)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
            raise DatasetError(f"cannot unpack {archive} ({e}); delete it and download again") from None
        found = _layout_folder(tmp, layout)
        if found is None:
            raise DatasetError(f"{archive} holds none of the folders {', '.join(layout)}; "
                               f"it is not the dataset expected")
        os.makedirs(target, exist_ok=True)
        for entry in os.listdir(found):
            destination = os.path.join(target, entry)
            if os.path.isdir(destination) and not os.path.islink(destination):
                shutil.rmtree(destination)
            elif os.path.lexists(destination):
                os.remove(destination)
            shutil.move(os.path.join(found, entry), destination)


def _extract_tar(t: tarfile.TarFile, tmp: str, archive: str) -> None:
    """Extract `t` into `tmp`, refusing links and paths leaving it: tarfile's "data" filter,
    or, on a Python before it (3.10.11, 3.11.3), the same refusals checked here."""
    if hasattr(tarfile, "data_filter"):
        t.extractall(tmp, filter="data")
        return
    for member in t.getmembers():
        if not (member.isfile() or member.isdir()):
            raise DatasetError(f"{archive} has a member that is not a file or folder ({member.name}); refused")
        _inside(tmp, member.name, archive)
    t.extractall(tmp)


def _inside(root: str, member: str, archive: str) -> None:
    path = os.path.realpath(os.path.join(root, member))
    if os.path.commonpath([path, os.path.realpath(root)]) != os.path.realpath(root):
        raise DatasetError(f"{archive} has a member outside its folder ({member}); refused")


def _layout_folder(tmp: str, layout: tuple[str, ...]) -> str | None:
    """The unpacked folder holding the layout: the top (archives without a NAME/ folder) or one below."""
    candidates = [tmp] + sorted(os.path.join(tmp, d) for d in os.listdir(tmp)
                                if os.path.isdir(os.path.join(tmp, d)))
    for folder in candidates:
        if any(os.path.isdir(os.path.join(folder, d)) for d in layout):
            return folder
    return None
