"""`python -m fastgan.data download NAME`: the reference's public datasets into ./datasets/NAME.

    python -m fastgan.data download horse2zebra
    python -m fastgan.data download facades --arch cyclegan --root /data
"""

from __future__ import annotations

import argparse
import sys

from fastgan.cli import fail
from fastgan.data.download import CYCLEGAN_SETS, HOST, PIX2PIX_SETS, download
from fastgan.data.errors import DatasetError


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastgan.data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser(
        "download", help="fetch a CycleGAN or pix2pix dataset (resumes an interrupted download)",
        epilog=f"CycleGAN: {', '.join(CYCLEGAN_SETS)}. pix2pix: {', '.join(PIX2PIX_SETS)}. cityscapes: "
               f"licensed, see https://cityscapes-dataset.com (the command says how).")
    get.add_argument("name")
    get.add_argument("--root", default="./datasets", help="where NAME/ goes (default: ./datasets)")
    get.add_argument("--arch", choices=("cyclegan", "pix2pix"),
                     help="which form of a dataset both have (facades, maps; default: pix2pix)")
    get.add_argument("--host", default=HOST, help=f"server holding cyclegan/ and pix2pix/ (default: {HOST})")
    args = parser.parse_args(argv)
    try:
        download(args.name, args.root, args.arch, args.host)
    except DatasetError as e:
        fail(str(e))


if __name__ == "__main__":
    main(sys.argv[1:])
