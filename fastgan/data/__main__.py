"""`python -m fastgan.data download NAME`: the reference's public datasets into ./datasets/NAME;
`python -m fastgan.data download_model NAME`: its pretrained generators into
./checkpoints/NAME_pretrained/latest_net_G.pth.

    python -m fastgan.data download horse2zebra
    python -m fastgan.data download facades --arch cyclegan --root /data
    python -m fastgan.data download_model horse2zebra
"""

from __future__ import annotations

import argparse
import sys

from fastgan.cli import fail
from fastgan.data.download import CYCLEGAN_SETS, HOST, PIX2PIX_SETS, download
from fastgan.data.errors import DatasetError
from fastgan.data.pretrained import CYCLEGAN_MODELS, PIX2PIX_MODELS, download_pretrained
from fastgan.errors import os_error_line


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastgan.data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser(
        "download", help="fetch a CycleGAN or pix2pix dataset (resumes an interrupted download)",
        epilog=f"CycleGAN: {', '.join(CYCLEGAN_SETS)}. pix2pix: {', '.join(PIX2PIX_SETS)}. cityscapes: "
               f"licensed, see https://cityscapes-dataset.com (the command says how).")
    get.add_argument("--root", default="./datasets", help="where NAME/ goes (default: ./datasets)")
    get_model = commands.add_parser(
        "download_model", help="fetch a pretrained CycleGAN or pix2pix generator (resumes an interrupted download)",
        epilog=f"CycleGAN: {', '.join(CYCLEGAN_MODELS)}. pix2pix: {', '.join(PIX2PIX_MODELS)}.")
    get_model.add_argument("--checkpoints_dir", default="./checkpoints",
                           help="where NAME_pretrained/ goes (default: ./checkpoints)")
    for command, both in ((get, "facades, maps"), (get_model, "sat2map, map2sat, facades_label2photo")):
        command.add_argument("name")
        command.add_argument("--arch", choices=("cyclegan", "pix2pix"),
                             help=f"which form of a name both have ({both}; default: pix2pix)")
        command.add_argument("--host", default=HOST,
                             help=f"server holding cyclegan/ and pix2pix/ (default: {HOST})")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            download(args.name, args.root, args.arch, args.host)
        else:
            download_pretrained(args.name, args.checkpoints_dir, args.arch, args.host)
    except DatasetError as e:
        fail(str(e))
    except OSError as e:  # a folder that cannot be made or written
        fail(os_error_line(e))
    except KeyboardInterrupt:  # what was received stays in the .part file
        print("\ninterrupted: run the command again to resume the download", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
