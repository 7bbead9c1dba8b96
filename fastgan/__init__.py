"""fastgan: CycleGAN and Pix2Pix training with the reference's semantics, fast."""

from fastgan.options import Options


def build_model(arch: str, **options):
    """A training model for `arch` ("cyclegan" or "pix2pix") with the CLI's option names. It
    seeds torch's global random generator with `seed` (default 0), as a run does."""
    from fastgan.engine.models import build_model as _build

    return _build(arch, **options)


def accelerate(module, backend: str = "auto"):
    """Rewrites any nn.Module in place into fastgan's fused modules and returns it: same
    parameters, state_dict keys and outputs (fastgan/nn/accelerate.py says what it matches)."""
    from fastgan.nn.accelerate import accelerate as _accelerate

    return _accelerate(module, backend)


def reuse_freed_memory() -> bool:
    """On a CPU: glibc's malloc keeps freed blocks up to 32 MiB for reuse, as fastgan's CPU
    levels have it, so a training loop's large tensors do not fault their pages in again every
    iteration (process-wide, for the process's life). True where set; False where malloc is
    not glibc's (another C library, jemalloc or tcmalloc preloaded)."""
    from fastgan.engine.host_memory import reuse_freed_memory as _reuse

    return _reuse()


__all__ = ["Options", "accelerate", "build_model", "reuse_freed_memory"]
