"""ctest: the CMake-built library loads with torch.ops.load_library and its ops work.

    python tests/cpp/load_library.py build/cmake/libfastgan_ops.so

(Not a pytest file: pytest loads fastgan._C, and one process may hold only one
TORCH_LIBRARY(fastgan).)
"""

import sys

import torch


def main(path: str) -> int:
    torch.ops.load_library(path)
    torch.manual_seed(0)
    x = torch.randn(3, 4, 33, 7)
    t = torch.randn(3, 4, 33, 7)
    loss = torch.ops.fastgan.l1_loss(x, t, 0.5)
    want = (0.5 * (x.double() - t.double()).abs().mean()).float()
    grad_input, grad_target = torch.ops.fastgan.l1_loss_backward(torch.tensor(1.0), x, t, 0.5)
    sign = torch.sign(x.double() - t.double())
    ok = (torch.equal(loss, want)
          and torch.allclose(grad_input.double(), 0.5 * sign / x.numel(), rtol=1e-6, atol=0)
          and torch.equal(grad_target, -grad_input))
    print(f"{path}: loss {loss.item():.8f} (want {want.item():.8f}), gradients {'ok' if ok else 'WRONG'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
