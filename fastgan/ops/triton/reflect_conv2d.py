"""Triton kernels of fastgan.ops.reflect_conv2d: a convolution whose input is reflection
padded on the fly, never materialized.

    y = conv2d(reflect_pad(x, p), w, b, stride s)        groups 1, dilation 1

Three implicit GEMMs, each reading the tensors it needs through their strides (NCHW,
channels_last or any other strided layout), each with fp32 accumulation (float64 for
float64 inputs):

forward (`forward`)
    M = N*OH*OW output pixels, N = C_out, K = KH*KW*C_in (ordered tap-major, channel
    fastest). The A tile is x gathered at reflected indices: padded row j = oh*s + kh
    reads x row r(j - p), r(i) = -i for i < 0, 2(H-1) - i for i >= H (p < H, W, so one
    reflection suffices). When C_in is a multiple of BLOCK_K a K step lies within one
    tap (kh, kw), and the reflection is computed once per output pixel (ALIGNED);
    else per element. Bias is added to the fp32 accumulator before the one store.

input gradient (`grad_input`)
    The transposed implicit GEMM, M = N*H*W input pixels, N = C_in, K = KH*KW*C_out. The
    gradient of the padded input at padded row j is sum over taps kh with
    (j - kh) % s == 0 of grad rows (j - kh) / s; the padded rows that read input row i
    are j = i + p (always), p - i (1 <= i <= p: the top reflection) and p + 2(H-1) - i
    (H-1-p <= i <= H-2: the bottom one), and the same for columns. So each input pixel
    sums the transposed GEMM over up to 3 x 3 (row source, column source) pairs: the
    reflected border is folded back inside the kernel, the padded gradient is never
    materialized, and every dx element is written once (no atomics). A program skips a
    (row source, column source) pair none of its pixels has, so interior tiles do the
    work of one pair only (the pairs are a runtime loop: one copy of the GEMM loop in
    the binary).

weight gradient (`grad_weight`)
    M = C_out, N = KH*KW*C_in, K = N*OH*OW output pixels: grad^T times x gathered at
    reflected indices (ALIGNED when C_in is a multiple of BLOCK_N: the reflection per
    pixel only). The pixel range is split in SPLIT contiguous parts (one program per
    (tile, part), for parallelism when C_out*KH*KW*C_in is small), each writing its
    own fp32 partial; the partials are summed in a fixed order (deterministic).

The bias gradient is grad summed over (N, OH, OW) (aten, in fp32).

Data movement and work (elements of size e bytes; P = N*OH*OW, X = N*C_in*H*W):
    forward      reads X + C_out*C_in*KH*KW, writes P*C_out;          2*P*C_out*C_in*KH*KW FLOPs
    grad_input   reads P*C_out + weight,       writes X;               2*P*C_out*C_in*KH*KW FLOPs
    grad_weight  reads P*C_out + X,            writes SPLIT*weight fp32; 2*P*C_out*C_in*KH*KW FLOPs
the floor of each (each input read once, each output written once), plus one repacking
copy of the weight in the forward and the input gradient (its B tiles then read
contiguous rows; 2 x weight bytes, small next to the activations but for batch 1 at
256 channels). pad + conv moves
in addition the padded input, N*C_in*(H+2p)*(W+2p) elements written and read again in
the forward and in the weight gradient, and the padded input gradient written and read
again by the fold of the input gradient. CycleGAN's convolutions, bf16, batch 1:
    3x3/p1 residual, 256 -> 256 at 64x64: 4.8 GFLOP; floor 2.1 + 1.2 + 2.1 MB; the pad
        adds 4.5 MB per pass (compute bound: the GEMM must be close to cuDNN's to win)
    7x7/p3 stem, 3 -> 64 at 256x256: 1.2 GFLOP; floor 0.4 + 0.02 + 8.4 MB; pad adds 0.8 MB
    7x7/p3 head, 64 -> 3 at 256x256: 1.2 GFLOP; floor 8.4 + 0.02 + 0.4 MB; the pad adds
        17.6 MB (the padded 64-channel input): memory bound, where the fusion pays most
fastgan.ops.reflect_conv2d measures this kernel and pad + cuDNN per shape and keeps the
faster, so the fused path is taken only where it wins.
Time against pad + cuDNN on a GPU: make bench-kernels / benchmarks/gpu_suite.sh record it
(benchmarks/results/kernels_<card>.md).

Tile configurations: autotuned on a GPU over a few standard GEMM tiles (key: the
shape and the channel stride; timings kept on disk where Triton can, >= 3.4); one
64 x 16 x 32 (M x N x K) tile under the interpreter
(TRITON_INTERPRET=1), where these kernels run on CPU tensors for the tests.
"""

from __future__ import annotations

import inspect

import torch
import triton
import triton.language as tl
from triton.compiler.errors import CompileTimeAssertionFailure
from triton.runtime.errors import OutOfResources, PTXASError

from fastgan.ops.triton import INTERPRET
from fastgan.ops.triton._common import on_device, rounded

__all__ = ["forward", "grad_input", "grad_weight", "default_split"]


# Autotuning timings kept in Triton's cache directory (Triton >= 3.4): a later process on the
# same GPU, Triton and kernel source (the next training run, the GPU suite's next step)
# takes the tile measured before instead of compiling and timing every tile again
# (the first CycleGAN level with these kernels took 53 s to warm up on an H200, tuning included).
_AUTOTUNE_DISK_CACHE = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters \
    else {}

# The constexprs that shape a kernel beyond its sizes, in every autotune key: a tile
# measured for a 3x3 kernel (or under tf32) must not be taken for a 7x7 one (or ieee).
_VARIANT_KEY = ("KH", "KW", "STRIDE", "PAD", "PRECISION")


def _configs(gpu: list[tuple[int, int, int, int, int]]) -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 32}, num_warps=1, num_stages=1)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in gpu]


# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages): GEMM tiles for Hopper/Ampere class GPUs.
_GPU_TILES = [
    (128, 128, 32, 8, 3),
    (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4),
    (64, 64, 32, 4, 4),
    (128, 16, 64, 4, 3),  # few output channels (the 64 -> 3 head)
]
# the weight gradient: small M (C_out) and N (taps x C_in), long K (pixels)
_GPU_TILES_DW = [
    (64, 64, 64, 4, 4),
    (128, 64, 64, 8, 3),
    (32, 64, 128, 4, 3),
    (16, 128, 64, 4, 3),  # few output channels
]


# what the autotuner skips a tile for (it does not fit the device: shared memory, registers)
_TILE_MISFITS = (OutOfResources, PTXASError, CompileTimeAssertionFailure)


def _launch(kernel, gpu_tiles: list[tuple[int, int, int, int, int]], grid, *args, **kwargs) -> None:
    """kernel[grid](*args, **kwargs) with the tile the autotuner times fastest; under
    torch.use_deterministic_algorithms, past the autotuner, with the first of the tiles that
    fits the device, in the list's order. The tile's BLOCK_K sets the order of the float32
    sums, and a pick by timing can differ between two processes or machines."""
    if not torch.are_deterministic_algorithms_enabled():
        kernel[grid](*args, **kwargs)
        return
    configs = _configs(gpu_tiles)
    for i, config in enumerate(configs):
        try:
            kernel.fn[grid](*args, **kwargs, **config.all_kwargs())
            return
        except _TILE_MISFITS:  # (raised before the kernel runs: nothing written)
            if i == len(configs) - 1:
                raise


@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, WIDEN: tl.constexpr):
    """acc + a @ b. WIDEN (the interpreter with bf16 tiles): its tl.dot multiplies the
    bf16 bit patterns as integers (triton 3.8 interpreter create_dot), so the tiles are
    widened to fp32 first, exactly (an MMA's bf16 products are exact in fp32 as well)."""
    if WIDEN:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)


@triton.jit
def _reflect(i, size):
    """The source index of padded index i (already shifted by -pad): one reflection."""
    i = tl.where(i < 0, -i, i)
    return tl.where(i >= size, 2 * size - 2 - i, i)


@triton.autotune(configs=_configs(_GPU_TILES), key=["N", "C_in", "H", "W", "C_out", "sxc", "syc", *_VARIANT_KEY, "HAS_BIAS"],
                 **_AUTOTUNE_DISK_CACHE)
@triton.heuristics({"ALIGNED": lambda a: a["C_in"] % a["BLOCK_K"] == 0})
@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    N, C_in, H, W, C_out, OH, OW,
    sxn, sxc, sxh, sxw,
    swo, swi, swh, sww,
    syn, syc, syh, syw,
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    WIDEN: tl.constexpr, ALIGNED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    num_n = tl.cdiv(C_out, BLOCK_N)
    pid_n = pid % num_n  # the C_out tiles of one pixel tile run side by side (x tile reuse in L2)
    pid_m = pid // num_n

    M = N * OH * OW
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < C_out
    n_idx = offs_m // (OH * OW)
    rem = offs_m % (OH * OW)
    oh = rem // OW
    ow = rem % OW
    ih0 = oh * STRIDE - PAD
    iw0 = ow * STRIDE - PAD
    x_base = n_idx.to(tl.int64) * sxn

    K_TOTAL = KH * KW * C_in
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, K_TOTAL, BLOCK_K):
        if ALIGNED:
            # the whole K step is one tap: reflect once per pixel
            tap = k0 // C_in
            kh = tap // KW
            kw = tap % KW
            ci = (k0 - tap * C_in) + tl.arange(0, BLOCK_K)
            ih = _reflect(ih0 + kh, H)
            iw = _reflect(iw0 + kw, W)
            a_ptrs = x_ptr + (x_base + ih * sxh + iw * sxw)[:, None] + (ci * sxc)[None, :]
            a = tl.load(a_ptrs, mask=m_mask[:, None], other=0.0)
            b_ptrs = w_ptr + (kh * swh + kw * sww + ci * swi)[:, None] + (offs_n * swo)[None, :]
            b = tl.load(b_ptrs, mask=n_mask[None, :], other=0.0)
        else:
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < K_TOTAL
            ci = offs_k % C_in
            tap = offs_k // C_in
            kh = tap // KW
            kw = tap % KW
            ih = _reflect(ih0[:, None] + kh[None, :], H)
            iw = _reflect(iw0[:, None] + kw[None, :], W)
            a_ptrs = x_ptr + x_base[:, None] + ih * sxh + iw * sxw + (ci * sxc)[None, :]
            a = tl.load(a_ptrs, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
            b_ptrs = w_ptr + (kh * swh + kw * sww + ci * swi)[:, None] + (offs_n * swo)[None, :]
            b = tl.load(b_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        acc = _mma(a, b, acc, PRECISION, ACC_DTYPE, WIDEN)

    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(ACC_DTYPE)
        acc = acc + bias[None, :]
    y_ptrs = (y_ptr + (n_idx.to(tl.int64) * syn + oh * syh + ow * syw)[:, None]
              + (offs_n * syc)[None, :])
    tl.store(y_ptrs, rounded(acc, y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def _dx_source_pair(
    acc, g_ptr, w_ptr, g_base, jh, jw, valid, offs_n, n_mask,
    C_in, C_out, OH, OW,
    sgc, sgh, sgw, swo, swi, swh, sww,
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, WIDEN: tl.constexpr, ALIGNED: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """acc += the transposed GEMM at padded positions (jh, jw) of the rows where valid."""
    K_TOTAL = KH * KW * C_out
    for k0 in range(0, K_TOTAL, BLOCK_K):
        if ALIGNED:
            tap = k0 // C_out
            kh = tap // KW
            kw = tap % KW
            co = (k0 - tap * C_out) + tl.arange(0, BLOCK_K)
            th = jh - kh
            tw = jw - kw
            oh = th // STRIDE
            ow = tw // STRIDE
            ok = valid & (th >= 0) & (tw >= 0) & (oh < OH) & (ow < OW)
            if STRIDE > 1:
                ok = ok & (th % STRIDE == 0) & (tw % STRIDE == 0)
            a_ptrs = g_ptr + (g_base + oh * sgh + ow * sgw)[:, None] + (co * sgc)[None, :]
            a = tl.load(a_ptrs, mask=ok[:, None], other=0.0)
            b_ptrs = w_ptr + (co * swo + kh * swh + kw * sww)[:, None] + (offs_n * swi)[None, :]
            b = tl.load(b_ptrs, mask=n_mask[None, :], other=0.0)
        else:
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < K_TOTAL
            co = offs_k % C_out
            tap = offs_k // C_out
            kh = tap // KW
            kw = tap % KW
            th = jh[:, None] - kh[None, :]
            tw = jw[:, None] - kw[None, :]
            oh = th // STRIDE
            ow = tw // STRIDE
            ok = valid[:, None] & k_mask[None, :] & (th >= 0) & (tw >= 0) & (oh < OH) & (ow < OW)
            if STRIDE > 1:
                ok = ok & (th % STRIDE == 0) & (tw % STRIDE == 0)
            a_ptrs = g_ptr + g_base[:, None] + oh * sgh + ow * sgw + (co * sgc)[None, :]
            a = tl.load(a_ptrs, mask=ok, other=0.0)
            b_ptrs = w_ptr + (co * swo + kh * swh + kw * sww)[:, None] + (offs_n * swi)[None, :]
            b = tl.load(b_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        acc = _mma(a, b, acc, PRECISION, ACC_DTYPE, WIDEN)
    return acc


@triton.autotune(configs=_configs(_GPU_TILES), key=["N", "C_in", "H", "W", "C_out", "sgc", "sdc", *_VARIANT_KEY],
                 **_AUTOTUNE_DISK_CACHE)
@triton.heuristics({"ALIGNED": lambda a: a["C_out"] % a["BLOCK_K"] == 0})
@triton.jit
def _grad_input_kernel(
    g_ptr, w_ptr, dx_ptr,
    N, C_in, H, W, C_out, OH, OW,
    sgn, sgc, sgh, sgw,
    swo, swi, swh, sww,
    sdn, sdc, sdh, sdw,
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, WIDEN: tl.constexpr, ALIGNED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    num_n = tl.cdiv(C_in, BLOCK_N)
    pid_n = pid % num_n
    pid_m = pid // num_n

    M = N * H * W
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < C_in
    n_idx = offs_m // (H * W)
    rem = offs_m % (H * W)
    ih = rem // W
    iw = rem % W
    g_base = n_idx.to(tl.int64) * sgn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    # (row source, column source) pairs: source 0 is the position itself, 1 the
    # top/left reflection, 2 the bottom/right one (see the module docstring). A runtime
    # loop (one copy of the GEMM loop in the binary, not nine), skipping the pairs none
    # of this tile's pixels has: interior tiles run pair (0, 0) only.
    for pair in range(0, 9 if PAD > 0 else 1):
        sh = pair // 3
        sw = pair % 3
        jh = tl.where(sh == 0, ih + PAD, tl.where(sh == 1, PAD - ih, PAD + 2 * H - 2 - ih))
        top = (ih >= 1) & (ih <= PAD)
        bottom = (ih >= H - 1 - PAD) & (ih <= H - 2)
        vh = tl.where(sh == 0, m_mask, tl.where(sh == 1, m_mask & top, m_mask & bottom))
        jw = tl.where(sw == 0, iw + PAD, tl.where(sw == 1, PAD - iw, PAD + 2 * W - 2 - iw))
        left = (iw >= 1) & (iw <= PAD)
        right = (iw >= W - 1 - PAD) & (iw <= W - 2)
        valid = vh & tl.where(sw == 0, True, tl.where(sw == 1, left, right))
        if tl.max(valid.to(tl.int32), axis=0) > 0:
            acc = _dx_source_pair(acc, g_ptr, w_ptr, g_base, jh, jw, valid, offs_n, n_mask,
                                  C_in, C_out, OH, OW, sgc, sgh, sgw, swo, swi, swh, sww,
                                  KH, KW, STRIDE, PRECISION, ACC_DTYPE, WIDEN, ALIGNED, BLOCK_K)

    dx_ptrs = (dx_ptr + (n_idx.to(tl.int64) * sdn + ih * sdh + iw * sdw)[:, None]
               + (offs_n * sdc)[None, :])
    tl.store(dx_ptrs, rounded(acc, dx_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@triton.autotune(configs=_configs(_GPU_TILES_DW), key=["N", "C_in", "H", "W", "C_out", "sgc", "sxc", "PIX_PER_SPLIT", *_VARIANT_KEY],
                 **_AUTOTUNE_DISK_CACHE)
@triton.heuristics({"ALIGNED": lambda a: a["C_in"] % a["BLOCK_N"] == 0})
@triton.jit
def _grad_weight_kernel(
    g_ptr, x_ptr, part_ptr,
    N, C_in, H, W, C_out, OH, OW, PIX_PER_SPLIT,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, WIDEN: tl.constexpr, ALIGNED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    K_TOTAL = KH * KW * C_in
    num_n = tl.cdiv(K_TOTAL, BLOCK_N)
    pid_n = pid % num_n
    pid_m = pid // num_n

    P = N * OH * OW
    offs_co = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    co_mask = offs_co < C_out
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_mask = offs_k < K_TOTAL
    if ALIGNED:  # the whole column tile is one tap
        tap = (pid_n * BLOCK_N) // C_in
        kh = tap // KW
        kw = tap % KW
        ci = (pid_n * BLOCK_N - tap * C_in) + tl.arange(0, BLOCK_N)
    else:
        ci = offs_k % C_in
        tap = offs_k // C_in
        kh = tap // KW
        kw = tap % KW

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    start = pid_s * PIX_PER_SPLIT
    stop = tl.minimum(start + PIX_PER_SPLIT, P)
    for p0 in range(start, stop, BLOCK_K):
        offs_p = p0 + tl.arange(0, BLOCK_K)
        p_mask = offs_p < stop
        n_idx = offs_p // (OH * OW)
        rem = offs_p % (OH * OW)
        oh = rem // OW
        ow = rem % OW
        a_ptrs = (g_ptr + (n_idx.to(tl.int64) * sgn + oh * sgh + ow * sgw)[None, :]
                  + (offs_co * sgc)[:, None])
        a = tl.load(a_ptrs, mask=co_mask[:, None] & p_mask[None, :], other=0.0)
        x_base = n_idx.to(tl.int64) * sxn
        if ALIGNED:
            ih = _reflect(oh * STRIDE - PAD + kh, H)
            iw = _reflect(ow * STRIDE - PAD + kw, W)
            b_ptrs = x_ptr + (x_base + ih * sxh + iw * sxw)[:, None] + (ci * sxc)[None, :]
            b = tl.load(b_ptrs, mask=p_mask[:, None], other=0.0)
        else:
            ih = _reflect((oh * STRIDE - PAD)[:, None] + kh[None, :], H)
            iw = _reflect((ow * STRIDE - PAD)[:, None] + kw[None, :], W)
            b_ptrs = x_ptr + x_base[:, None] + ih * sxh + iw * sxw + (ci * sxc)[None, :]
            b = tl.load(b_ptrs, mask=p_mask[:, None] & k_mask[None, :], other=0.0)
        acc = _mma(a, b, acc, PRECISION, ACC_DTYPE, WIDEN)

    part_ptrs = (part_ptr + pid_s.to(tl.int64) * C_out * K_TOTAL
                 + (offs_co * K_TOTAL)[:, None] + offs_k[None, :])
    tl.store(part_ptrs, acc, mask=co_mask[:, None] & k_mask[None, :])


# ----------------------------------------------------------------------------- launchers


def _out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def _precision(dtype: torch.dtype, device: torch.device) -> str:
    """tf32 for float32 on a GPU where torch.backends.cudnn.allow_tf32 (the flag that
    lets cuDNN convolutions use it) is set; else exact (ieee) products."""
    if dtype == torch.float32 and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _widen(dtype: torch.dtype) -> bool:
    return INTERPRET and dtype == torch.bfloat16


def _packed(weight: torch.Tensor, fastest: int) -> torch.Tensor:
    """weight (C_out, C_in, KH, KW) as a view of memory ordered (KH, KW, other channel
    dim, dim `fastest`): the GEMM's B tiles then load contiguous rows. One copy of the
    (small) weight unless it is laid out so already."""
    other = 1 - fastest
    order = (2, 3, other, fastest)
    packed = weight.permute(order)
    if not packed.is_contiguous():
        packed = packed.contiguous()
    inverse = [order.index(d) for d in range(4)]
    return packed.permute(inverse)


def _check(*tensors: torch.Tensor) -> None:
    dtype, device = tensors[0].dtype, tensors[0].device
    for t in tensors:
        if t.dtype != dtype or t.device != device:
            raise ValueError("reflect_conv2d (triton): all tensors must have the same dtype and device, "
                             f"got {[(str(u.dtype), str(u.device)) for u in tensors]}")
        if t.dim() != 4:
            raise ValueError(f"reflect_conv2d (triton): expected 4-d tensors, got shape {tuple(t.shape)}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"reflect_conv2d (triton): unsupported dtype {dtype}")


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int,
            out: torch.Tensor) -> torch.Tensor:
    """Writes conv2d(reflect_pad(x, padding), weight, bias, stride) into `out` (any strides,
    shape (N, C_out, OH, OW)) and returns it."""
    _check(x, weight, out)
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    oh, ow = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    assert tuple(out.shape) == (n, c_out, oh, ow), (tuple(out.shape), (n, c_out, oh, ow))
    if out.numel() == 0:
        return out
    if bias is not None:
        bias = bias.contiguous()
    weight = _packed(weight, fastest=0)  # the B tile (K x C_out) reads along C_out

    def grid(meta):
        return (triton.cdiv(n * oh * ow, meta["BLOCK_M"]) * triton.cdiv(c_out, meta["BLOCK_N"]),)

    with on_device(x.device):
        _launch(
            _forward_kernel, _GPU_TILES, grid,
            x, weight, bias if bias is not None else x, out,
            n, c_in, h, w, c_out, oh, ow,
            *x.stride(), *weight.stride(), *out.stride(),
            KH=kh, KW=kw, STRIDE=stride, PAD=padding, HAS_BIAS=bias is not None,
            PRECISION=_precision(x.dtype, x.device), ACC_DTYPE=_acc_dtype(x.dtype), WIDEN=_widen(x.dtype),
        )
    return out


def grad_input(grad: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
               out: torch.Tensor) -> torch.Tensor:
    """Writes the gradient of x (shape (N, C_in, H, W), any strides) into `out`, the
    reflected border folded back, and returns it."""
    _check(grad, weight, out)
    n, c_in, h, w = out.shape
    c_out, _, kh, kw = weight.shape
    oh, ow = grad.shape[2], grad.shape[3]
    assert (oh, ow) == (_out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding))
    if out.numel() == 0:
        return out
    weight = _packed(weight, fastest=1)  # the B tile (K x C_in) reads along C_in

    def grid(meta):
        return (triton.cdiv(n * h * w, meta["BLOCK_M"]) * triton.cdiv(c_in, meta["BLOCK_N"]),)

    with on_device(grad.device):
        _launch(
            _grad_input_kernel, _GPU_TILES, grid,
            grad, weight, out,
            n, c_in, h, w, c_out, oh, ow,
            *grad.stride(), *weight.stride(), *out.stride(),
            KH=kh, KW=kw, STRIDE=stride, PAD=padding,
            PRECISION=_precision(grad.dtype, grad.device), ACC_DTYPE=_acc_dtype(grad.dtype), WIDEN=_widen(grad.dtype),
        )
    return out


def default_split(pixels: int, c_out: int, k_total: int, device: torch.device) -> int:
    """How many parts the pixel reduction of the weight gradient is split in: enough
    programs for about two waves on the GPU, each part at least 1024 pixels."""
    if device.type != "cuda":
        return max(1, min(4, triton.cdiv(pixels, 64)))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    tiles = triton.cdiv(c_out, 64) * triton.cdiv(k_total, 64)
    return max(1, min(triton.cdiv(2 * sms, tiles), triton.cdiv(pixels, 1024)))


def grad_weight(grad: torch.Tensor, x: torch.Tensor, stride: int, padding: int, out: torch.Tensor,
                split: int | None = None) -> torch.Tensor:
    """Writes the gradient of the weight (shape (C_out, C_in, KH, KW), any strides) into
    `out` and returns it. `split`: parts of the pixel reduction (None: default_split)."""
    _check(grad, x, out)
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = out.shape
    oh, ow = grad.shape[2], grad.shape[3]
    assert (oh, ow) == (_out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding))
    pixels, k_total = n * oh * ow, kh * kw * c_in
    if out.numel() == 0:
        return out
    if pixels == 0:
        return out.zero_()
    if split is None:
        split = default_split(pixels, c_out, k_total, x.device)
    # parts of whole multiples of 128 pixels (every BLOCK_K divides it)
    per_split = triton.cdiv(triton.cdiv(pixels, split), 128) * 128
    split = triton.cdiv(pixels, per_split)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    part = torch.empty((split, c_out, k_total), dtype=acc_dtype, device=x.device)

    def grid(meta):
        return (triton.cdiv(c_out, meta["BLOCK_M"]) * triton.cdiv(k_total, meta["BLOCK_N"]), split)

    with on_device(x.device):
        _launch(
            _grad_weight_kernel, _GPU_TILES_DW, grid,
            grad, x, part,
            n, c_in, h, w, c_out, oh, ow, per_split,
            *grad.stride(), *x.stride(),
            KH=kh, KW=kw, STRIDE=stride, PAD=padding,
            PRECISION=_precision(x.dtype, x.device), ACC_DTYPE=_acc_dtype(x.dtype), WIDEN=_widen(x.dtype),
        )
    total = part[0] if split == 1 else part.sum(0)
    out.copy_(total.view(c_out, kh, kw, c_in).permute(0, 3, 1, 2))
    return out
