"""Which sources a build of fastgan._C came from: a hash of csrc/ that setup.py compiles into
the library (its SOURCE_HASH) and fastgan.ops._native compares with the checkout's csrc/, so
that a library built from other sources (csrc/ changed since `make build`: a pull, another
branch) is refused rather than run with other kernels or other op schemas than the Python
code expects. Standard library only: setup.py loads this file before anything is built."""

from __future__ import annotations

import hashlib
import os

GENERATED_HEADER = "source_hash.h"  # setup.py writes it into csrc/; not itself hashed
SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh", ".txt")


def csrc_hash(csrc: str) -> str:
    """A hash of the source files under `csrc` (their paths and bytes). Hidden names and what
    is not a regular file are left out: an editor's lock or swap file (emacs's `.#ops.cpp`, a
    dangling link while ops.cpp is edited) is no source, and changes nothing the build compiles."""
    digest = hashlib.sha256()
    for folder, subfolders, files in os.walk(csrc):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))  # (walked in this order)
        for name in sorted(files):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, csrc).replace(os.sep, "/")
            if (relative == GENERATED_HEADER or name.startswith(".") or not name.endswith(SOURCE_SUFFIXES)
                    or not os.path.isfile(path)):
                continue
            with open(path, "rb") as f:
                digest.update(relative.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()[:16]


def checkout_csrc() -> str | None:
    """The csrc/ beside the fastgan package (a checkout), or None."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
    return path if os.path.isdir(path) else None


def header_text(source_hash: str) -> str:
    return ("// Written by setup.py (fastgan/build_info.py): the hash of the csrc/ this build compiles.\n"
            f'#define FASTGAN_SOURCE_HASH "{source_hash}"\n')
