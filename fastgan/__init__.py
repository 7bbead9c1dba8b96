"""fastgan: CycleGAN and Pix2Pix training with the reference's semantics, fast."""

from fastgan.options import Options


def build_model(arch: str, **options):
    """A training model for `arch` ("cyclegan" or "pix2pix") with the CLI's option names."""
    from fastgan.engine.models import build_model as _build

    return _build(arch, **options)


__all__ = ["Options", "build_model"]
