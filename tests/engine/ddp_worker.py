"""One rank of a test's data-parallel run: `fastgan.train` as torchrun starts it, plus what the test compares.

    torchrun --standalone --nproc_per_node 2 -m tests.engine.ddp_worker OUT [--perturb] [--aot_eager] -- TRAIN_OPTIONS

Runs fastgan.train.main(TRAIN_OPTIONS) unchanged, then writes OUT/rank{r}.pt:
this rank's nets (the plain ones, reference keys) as they ended, and, once
main has returned, OUT/rank{r}_threads.json: the names of the threads still
running (none of gloo's may be: they can abort the interpreter's exit). With
--perturb, every rank but 0 re-draws its initial weights from another seed
before DistributedDataParallel wraps the nets, so the run shows whether every
rank really starts from rank 0's weights. With --aot_eager, torch.compile traces as it
does for inductor (dynamo, DDP's graph splitting, AOT autograd) but runs the traced
graphs as they are, without inductor's code generation (a minute of C++ compiles on a
cold cache, which tests/engine/test_levels.py covers in one process).
"""

from __future__ import annotations

import json
import os
import sys

import torch

from fastgan import train
from fastgan.engine import base, trainer
from fastgan.models import export_state_dict


def perturb_then(distribute):
    def perturbed(model):
        if torch.distributed.get_rank() > 0:
            generator = torch.Generator().manual_seed(1234)
            with torch.no_grad():
                for net in model.nets.values():
                    for p in net.parameters():
                        p.add_(torch.randn(p.shape, generator=generator).to(p) * 0.1)
        return distribute(model)

    return perturbed


def dumping(run, out: str):
    def run_and_dump(self):
        summary = run(self)
        nets = {k: export_state_dict(n) for k, n in self.model.nets.items()}
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # graphs torch.compile traced
        torch.save({"nets": nets, "summary": summary, "levels": self.model.levels, "compiled_graphs": graphs},
                   os.path.join(out, f"rank{self.ranks.rank}.pt"))
        return summary

    return run_and_dump


def main(argv: list[str]) -> None:
    split = argv.index("--")
    out, flags, options = argv[0], argv[1:split], argv[split + 1:]
    os.makedirs(out, exist_ok=True)
    if "--perturb" in flags:
        base.distribute = perturb_then(base.distribute)
    if "--aot_eager" in flags:
        compile_with = torch.compile
        torch.compile = lambda model, **options: compile_with(model, backend="aot_eager", **options)
    trainer.Trainer.run = dumping(trainer.Trainer.run, out)
    train.main(options)
    with open(os.path.join(out, f"rank{os.environ['RANK']}_threads.json"), "w") as f:
        json.dump(thread_names(), f)


def thread_names() -> list[str]:
    """This process's threads, as the kernel names them (gloo's: gloo_tcp_loop, pt_gloo_runloop)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # a thread that just ended
            pass
    return sorted(names)


if __name__ == "__main__":
    main(sys.argv[1:])
