"""`python -m fastgan.train`: the reference's train.py command line, on fastgan.

    python -m fastgan.train --arch cyclegan --dataroot ./datasets/horse2zebra --name horse2zebra
    python -m fastgan.train --arch cyclegan            # the embedded demo

Every reference option name works; fastgan adds --arch, --device, --seed and
--max_iters. With no --dataroot the run trains on the embedded demo and ends
by scoring G against the demo's ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from fastgan.cli import add_option_arguments, fail
from fastgan.options import resolve


def parse(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m fastgan.train", description=__doc__.split("\n\n")[0])
    add_option_arguments(parser)
    return vars(parser.parse_args(argv))


def main(argv=None) -> dict:
    from fastgan.data import DEMO_DEFAULTS, DatasetError, create_loader, demo_score, prepare_demo
    from fastgan.engine.models import resolve_device
    from fastgan.engine.trainer import Trainer
    from fastgan.models import CheckpointError

    explicit = parse(argv)
    arch = explicit.pop("arch", "cyclegan")
    demo_defaults = {"name": f"demo_{arch}", **DEMO_DEFAULTS[arch]}
    try:
        try:  # bad option values surface as ValueError while building
            opt = resolve(arch, explicit, demo_defaults)
            if opt.demo:
                opt = opt.replace(dataroot=prepare_demo(arch))
                print(f"no --dataroot: training on the embedded {arch} demo in {opt.dataroot}")
            loader = create_loader(opt, resolve_device(opt.device))
            trainer = Trainer(opt, loader)
        except ValueError as e:
            fail(str(e))
        summary = trainer.run()
    except (DatasetError, CheckpointError, FileNotFoundError) as e:
        fail(str(e))
    if opt.demo:
        summary["demo_score"] = report_demo_score(opt, trainer, demo_score)
    return summary


def report_demo_score(opt, trainer, demo_score) -> dict:
    from fastgan.engine.trainer import generator_for_scoring

    G = generator_for_scoring(trainer.model)
    score = demo_score(opt.arch, G, opt.dataroot, trainer.model.device)
    verdict = "beats" if score["model"] < score["identity"] else "does NOT beat"
    print(f"demo ground truth, held-out crops: G error {score['model']:.4f} vs identity baseline "
          f"{score['identity']:.4f} (mean absolute error, [0,1] pixels): the model {verdict} the baseline")
    with open(os.path.join(trainer.dir, "demo_score.json"), "w") as f:
        json.dump(score, f)
    return score


if __name__ == "__main__":
    main(sys.argv[1:])
