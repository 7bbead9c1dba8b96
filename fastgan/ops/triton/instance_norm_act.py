"""The `triton` back end of fastgan.ops.instance_norm_act.

Ops torch.ops.fastgan_triton.instance_norm_act / instance_norm_act_backward, with the
schemas, fake rules and autograd rules of the native fastgan::instance_norm_act /
instance_norm_act_backward (ops/_instance_norm_act.py): the forward returns (out,
mean, rstd) and saves x, mean and rstd; the backward recomputes the normalized value
and the activation's mask from them.

One kernel family serves both layouts: a program owns BLOCK_C channels of one image
over a run of SPLIT pixels, as a [BLOCK_C, BLOCK_HW] tile walked along the pixels
with the layout's strides (NCHW: a program per plane, BLOCK_C = 1, the pixels
contiguous; channels_last: BLOCK_C = 32 channels contiguous per pixel).

Forward (statistics: shifted sums, sum(x - k) and sum((x - k)^2) with k the mean of
the plane's 32 elements spread over it, lanes in float32 (float64 for float64 inputs), the
lanes added in float64 by tl.sum's fixed tree):
  planes of at most SPLIT pixels: `_fwd_kernel` with FUSED, one program computes the
    statistics, then re-reads its planes (from L1/L2) to write the output;
  larger planes (split reduction): `_fwd_stats_kernel` writes one float64 pair per
    (plane, split); `_sum_partials_kernel` adds each plane's pairs once, in a fixed
    order (deterministic); every program of `_fwd_kernel` (not FUSED) reads its planes'
    sums, split 0 writes mean and rstd, all write the output. (Each program adding all
    its planes' pairs itself would read N*C*S^2 pairs: 4 GiB at 1x64x1024x1024
    channels_last.)
Backward likewise with A = sum(gz), B = sum(gz * (x - mean)) (`_bwd_kernel` FUSED, or
`_bwd_stats_kernel`, `_sum_partials_kernel`, then `_bwd_kernel`), then `_param_kernel`
sums dweight and dbias over the images in order. No atomics: the same bits on every
run. The programs of a kernel are one grid axis (planes x splits): CUDA caps the
other axes at 65535, which the splits of a large channels_last plane exceed. All kernels compile
for sm_80 and sm_90 (checked here with triton.compile against those targets, no GPU).

Memory traffic floor (each input read once, each output written once): forward
numel * itemsize * (2 + [residual]) + N * C * 8 bytes; backward numel * itemsize * 3
+ the (N, C) statistics. Fused planes re-read x (and grad) from cache; split planes
read them twice (forward 1.5x the floor, backward 5/3 when the tensor exceeds L2).
Fraction of that floor reached on a GPU: make bench-kernels / benchmarks/gpu_suite.sh
record it (benchmarks/results/kernels_<card>.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastgan.ops._instance_norm_act import (
    INSTANCE_NORM_ACT,
    backward_fake,
    check_args,
    dense_input,
    forward_fake,
    make_autograd,
    param_grad_dtypes,
    stats_dtype,
)
from fastgan.ops._layout import in_order
from fastgan.ops.triton import triton_problem
from fastgan.ops.triton._common import define_op, launcher, rounded, split_f64

ACT_CODES = {"none": 0, "relu": 1, "leaky_relu": 2}
SPLIT_NCHW = 4096   # pixels per program, NCHW (one plane's run)
SPLIT_NHWC = 512    # pixels per program, channels_last (32 channels each)
BLOCK_S = 64        # partials per step when combining splits
SUM_PLANES = 16     # planes per program of _sum_partials_kernel
SHIFT_ELEMS = 32    # elements averaged for the shift k
PARAM_BLOCK = 128   # channels per program of _param_kernel


@triton.jit
def _join_f64(hi, lo):
    return tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)


@triton.jit
def _act(z, slope, ACT: tl.constexpr):
    if ACT == 1:
        z = tl.where(z > 0, z, tl.where(z != z, z, 0.0))
    elif ACT == 2:
        z = tl.where(z > 0, z, z * slope)
    return z


@triton.jit
def _act_grad(g, z, slope, ACT: tl.constexpr):
    if ACT == 1:  # as aten's threshold_backward: a NaN z passes the gradient
        g = tl.where(z <= 0, 0.0, g)
    elif ACT == 2:
        g = tl.where(z > 0, g, g * slope)
    return g


@triton.jit
def _tile_coords(HW, C, SPLIT, S, BLOCK_C: tl.constexpr):
    """(n, channels, channel mask, split index, first pixel, end pixel) of this program:
    program id = (n * channel blocks + channel block) * S + split."""
    cb_count = tl.cdiv(C, BLOCK_C)
    pid = tl.program_id(0).to(tl.int64)
    s = pid % S
    block = pid // S
    n = block // cb_count
    c = (block % cb_count) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    lo = s * SPLIT
    hi = tl.minimum(lo + SPLIT, HW)
    return n, c, c < C, s, lo, hi


@triton.jit
def _plane_shift(x_ptr, base, c, cmask, sC, sHW, HW, SHIFT_N, ACC: tl.constexpr):
    """k per channel: the mean of SHIFT_N = min(32, HW) elements spread over the plane,
    element j * step + j % step with step = HW // SHIFT_N (a diagonal across rows and
    columns where step is a whole number of rows, as at 256x256: the first 32 alone, a
    bright top row over a dark image, or a column alone, put k far from the mean, and the
    variance E[(x-k)^2] - E[x-k]^2 lost to cancellation what it gained in float32 sums),
    as the first element plus the mean difference to it (a constant plane's k is its
    value exactly, so its sums and variance are exactly 0)."""
    j = tl.arange(0, 32).to(tl.int64)
    m = cmask[:, None] & (j < SHIFT_N)[None, :]
    step = HW // SHIFT_N
    at = j * step + j % step
    v = tl.load(x_ptr + base + c[:, None] * sC + at[None, :] * sHW, mask=m, other=0.0).to(ACC)
    first = tl.load(x_ptr + base + c * sC, mask=cmask, other=0.0).to(ACC)
    return first + tl.sum(tl.where(m, v - first[:, None], 0.0), axis=1) / SHIFT_N


@triton.jit
def _shifted_sums(x_ptr, base, c, cmask, k, lo, hi, sC, sHW,
                  BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr):
    a1 = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    a2 = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    # k broadcast before the loop: Triton 3.6's remove-layout-conversions pass otherwise
    # reuses a layout conversion of k made inside the loop for the caller's later use
    # of k ("operand #0 does not dominate this use", BLOCK_C = 1 and BLOCK_HW <= 64)
    k2 = k[:, None]
    for start in range(lo, hi, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW).to(tl.int64)
        m = cmask[:, None] & (hw < hi)[None, :]
        v = tl.load(x_ptr + base + c[:, None] * sC + hw[None, :] * sHW, mask=m, other=0.0).to(ACC)
        d = tl.where(m, v - k2, 0.0)
        a1 += d
        a2 += d * d
    return tl.sum(a1.to(tl.float64), axis=1), tl.sum(a2.to(tl.float64), axis=1)


@triton.jit
def _combine(p1_ptr, p2_ptr, plane, cmask, S, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """Sums of the S partial pairs of each plane, in a fixed order."""
    a1 = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float64)
    a2 = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float64)
    for start in range(0, S, BLOCK_S):
        j = start + tl.arange(0, BLOCK_S)
        m = cmask[:, None] & (j < S)[None, :]
        offs = plane[:, None] * S + j[None, :]
        a1 += tl.load(p1_ptr + offs, mask=m, other=0.0)
        a2 += tl.load(p2_ptr + offs, mask=m, other=0.0)
    return tl.sum(a1, axis=1), tl.sum(a2, axis=1)


@triton.jit
def _sum_partials_kernel(p1_ptr, p2_ptr, s1_ptr, s2_ptr, PLANES, S, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr):
    """Each plane's S partial pairs added once, in a fixed order: BLOCK_P planes a program."""
    plane = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    pmask = plane < PLANES
    s1, s2 = _combine(p1_ptr, p2_ptr, plane, pmask, S, BLOCK_P, BLOCK_S)
    tl.store(s1_ptr + plane, s1, mask=pmask)
    tl.store(s2_ptr + plane, s2, mask=pmask)


@triton.jit
def _stats(s1, s2, k, HW, eps):
    m1 = s1 / HW
    var = s2 / HW - m1 * m1
    var_eps = tl.where(var < 0.0, 0.0, var) + eps  # (not tl.maximum: a NaN variance, an inf in the plane, stays)
    # rstd 0 for a constant plane with eps 0 (it normalizes to 0), as aten's InvStd
    return k.to(tl.float64) + m1, tl.where(var_eps == 0.0, 0.0, 1.0 / tl.sqrt(var_eps))


@triton.jit
def _apply(x_ptr, res_ptr, y_ptr, base, c, cmask, lo, hi, sC, sHW, mean, scale, shift, slope,
           ACT: tl.constexpr, HAS_RES: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
           ACC: tl.constexpr):
    for start in range(lo, hi, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW).to(tl.int64)
        m = cmask[:, None] & (hw < hi)[None, :]
        offs = base + c[:, None] * sC + hw[None, :] * sHW
        v = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        y = _act((v - mean[:, None]) * scale[:, None] + shift[:, None], slope, ACT)
        if HAS_RES:
            y = tl.load(res_ptr + offs, mask=m, other=0.0).to(ACC) + y
        tl.store(y_ptr + offs, rounded(y, y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _affine(w_ptr, b_ptr, c, cmask, HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK_C: tl.constexpr,
            ACC: tl.constexpr):
    if HAS_W:
        w = tl.load(w_ptr + c, mask=cmask, other=1.0).to(ACC)
    else:
        w = tl.full([BLOCK_C], 1.0, ACC)
    if HAS_B:
        b = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC)
    else:
        b = tl.zeros([BLOCK_C], ACC)
    return w, b


@triton.jit
def _fwd_stats_kernel(x_ptr, p1_ptr, p2_ptr, mean_ptr, C, HW, sN, sC, sHW, S, SPLIT, SHIFT_N,
                      BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    ACC = mean_ptr.dtype.element_ty  # float32, float64 for float64 inputs
    n, c, cmask, s, lo, hi = _tile_coords(HW, C, SPLIT, S, BLOCK_C)
    base = n * sN
    k = _plane_shift(x_ptr, base, c, cmask, sC, sHW, HW, SHIFT_N, ACC)
    s1, s2 = _shifted_sums(x_ptr, base, c, cmask, k, lo, hi, sC, sHW, BLOCK_C, BLOCK_HW, ACC)
    plane = n * C + c
    tl.store(p1_ptr + plane * S + s, s1, mask=cmask)
    tl.store(p2_ptr + plane * S + s, s2, mask=cmask)


@triton.jit
def _fwd_kernel(x_ptr, res_ptr, y_ptr, s1_ptr, s2_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr,
                C, HW, sN, sC, sHW, S, SPLIT, SHIFT_N, eps_hi, eps_lo, slope_hi, slope_lo,
                ACT: tl.constexpr, HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                FUSED: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """FUSED (S == 1): statistics over the whole planes, then the output; else the
    statistics from the planes' sums (_sum_partials_kernel), then this split's output."""
    ACC = mean_ptr.dtype.element_ty
    n, c, cmask, s, lo, hi = _tile_coords(HW, C, SPLIT, S, BLOCK_C)
    base = n * sN
    plane = n * C + c
    k = _plane_shift(x_ptr, base, c, cmask, sC, sHW, HW, SHIFT_N, ACC)
    if FUSED:
        s1, s2 = _shifted_sums(x_ptr, base, c, cmask, k, lo, hi, sC, sHW, BLOCK_C, BLOCK_HW, ACC)
    else:
        s1 = tl.load(s1_ptr + plane, mask=cmask, other=0.0)
        s2 = tl.load(s2_ptr + plane, mask=cmask, other=0.0)
    mean64, rstd64 = _stats(s1, s2, k, HW, _join_f64(eps_hi, eps_lo))
    mean = mean64.to(ACC)
    rstd = rstd64.to(ACC)
    tl.store(mean_ptr + plane, mean, mask=cmask & (s == 0))
    tl.store(rstd_ptr + plane, rstd, mask=cmask & (s == 0))
    w, b = _affine(w_ptr, b_ptr, c, cmask, HAS_W, HAS_B, BLOCK_C, ACC)
    scale = (rstd.to(tl.float64) * w.to(tl.float64)).to(ACC)
    slope = _join_f64(slope_hi, slope_lo).to(ACC)
    _apply(x_ptr, res_ptr, y_ptr, base, c, cmask, lo, hi, sC, sHW, mean, scale, b, slope,
           ACT, HAS_RES, BLOCK_C, BLOCK_HW, ACC)


@triton.jit
def _grad_sums(g_ptr, x_ptr, base, c, cmask, lo, hi, sC, sHW, mean, scale, shift, slope,
               ACT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr):
    a = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    bb = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for start in range(lo, hi, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW).to(tl.int64)
        m = cmask[:, None] & (hw < hi)[None, :]
        offs = base + c[:, None] * sC + hw[None, :] * sHW
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        g = tl.load(g_ptr + offs, mask=m, other=0.0).to(ACC)
        d = x - mean[:, None]
        gz = tl.where(m, _act_grad(g, d * scale[:, None] + shift[:, None], slope, ACT), 0.0)
        a += gz
        bb += gz * d
    return tl.sum(a.to(tl.float64), axis=1), tl.sum(bb.to(tl.float64), axis=1)


@triton.jit
def _bwd_stats_kernel(g_ptr, x_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, pa_ptr, pb_ptr,
                      C, HW, sN, sC, sHW, S, SPLIT, slope_hi, slope_lo,
                      ACT: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    ACC = mean_ptr.dtype.element_ty
    n, c, cmask, s, lo, hi = _tile_coords(HW, C, SPLIT, S, BLOCK_C)
    base = n * sN
    plane = n * C + c
    mean = tl.load(mean_ptr + plane, mask=cmask, other=0.0).to(ACC)
    rstd = tl.load(rstd_ptr + plane, mask=cmask, other=0.0).to(ACC)
    w, b = _affine(w_ptr, b_ptr, c, cmask, HAS_W, HAS_B, BLOCK_C, ACC)
    scale = (rstd.to(tl.float64) * w.to(tl.float64)).to(ACC)
    slope = _join_f64(slope_hi, slope_lo).to(ACC)
    sa, sb = _grad_sums(g_ptr, x_ptr, base, c, cmask, lo, hi, sC, sHW, mean, scale, b, slope,
                        ACT, BLOCK_C, BLOCK_HW, ACC)
    tl.store(pa_ptr + plane * S + s, sa, mask=cmask)
    tl.store(pb_ptr + plane * S + s, sb, mask=cmask)


@triton.jit
def _bwd_kernel(g_ptr, x_ptr, dx_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, sa_ptr, sb_ptr,
                C, HW, sN, sC, sHW, S, SPLIT, slope_hi, slope_lo,
                ACT: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, FUSED: tl.constexpr,
                BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """dx of this program's tile. FUSED: the planes' (A, B) sums computed and stored here;
    else read (_sum_partials_kernel wrote them)."""
    ACC = mean_ptr.dtype.element_ty
    n, c, cmask, s, lo, hi = _tile_coords(HW, C, SPLIT, S, BLOCK_C)
    base = n * sN
    plane = n * C + c
    slope_acc = _join_f64(slope_hi, slope_lo).to(ACC)
    mean = tl.load(mean_ptr + plane, mask=cmask, other=0.0).to(ACC)
    rstd = tl.load(rstd_ptr + plane, mask=cmask, other=0.0).to(ACC)
    w, b = _affine(w_ptr, b_ptr, c, cmask, HAS_W, HAS_B, BLOCK_C, ACC)
    scale = (rstd.to(tl.float64) * w.to(tl.float64)).to(ACC)
    if FUSED:
        sa, sb = _grad_sums(g_ptr, x_ptr, base, c, cmask, lo, hi, sC, sHW, mean, scale, b, slope_acc,
                            ACT, BLOCK_C, BLOCK_HW, ACC)
        tl.store(sa_ptr + plane, sa, mask=cmask)
        tl.store(sb_ptr + plane, sb, mask=cmask)
    else:
        sa = tl.load(sa_ptr + plane, mask=cmask, other=0.0)
        sb = tl.load(sb_ptr + plane, mask=cmask, other=0.0)
    r64 = rstd.to(tl.float64)
    c1_64 = r64 * w.to(tl.float64)
    c1 = c1_64.to(ACC)
    c2 = (c1_64 * sa / HW).to(ACC)
    c3 = (c1_64 * r64 * r64 * sb / HW).to(ACC)
    for start in range(lo, hi, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW).to(tl.int64)
        m = cmask[:, None] & (hw < hi)[None, :]
        offs = base + c[:, None] * sC + hw[None, :] * sHW
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        g = tl.load(g_ptr + offs, mask=m, other=0.0).to(ACC)
        d = x - mean[:, None]
        gz = _act_grad(g, d * scale[:, None] + b[:, None], slope_acc, ACT)
        dx = gz * c1[:, None] - d * c3[:, None] - c2[:, None]
        tl.store(dx_ptr + offs, rounded(dx, dx_ptr.dtype.element_ty), mask=m)


@triton.jit
def _param_kernel(sa_ptr, sb_ptr, rstd_ptr, dw_ptr, db_ptr, N, C, BLOCK: tl.constexpr):
    """dweight[c] = sum_n rstd * B, dbias[c] = sum_n A, over n in order."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cmask = c < C
    dw = tl.zeros([BLOCK], dtype=tl.float64)
    db = tl.zeros([BLOCK], dtype=tl.float64)
    for n in range(0, N):
        p = n * C + c
        r = tl.load(rstd_ptr + p, mask=cmask, other=0.0).to(tl.float64)
        dw += r * tl.load(sb_ptr + p, mask=cmask, other=0.0)
        db += tl.load(sa_ptr + p, mask=cmask, other=0.0)
    tl.store(dw_ptr + c, dw, mask=cmask)
    tl.store(db_ptr + c, db, mask=cmask)


# ------------------------------------------------------------------------- host side


def _sum_partials(p1: torch.Tensor, p2: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, S) -> None:
    """s1, s2 (one float64 per plane) = the sums of each plane's S partials in p1, p2."""
    planes = s1.numel()
    launcher(_sum_partials_kernel, p1.device)[(triton.cdiv(planes, SUM_PLANES),)](
        p1, p2, s1, s2, planes, S, BLOCK_P=SUM_PLANES, BLOCK_S=BLOCK_S)


def _geometry(x: torch.Tensor):
    """(strides sN, sC, sHW, BLOCK_C, BLOCK_HW, SPLIT) for a dense_input tensor."""
    N, C, H, W = x.shape
    HW = H * W
    if x.is_contiguous():
        return C * HW, HW, 1, 1, _pow2_block(HW, 1024), SPLIT_NCHW
    return HW * C, 1, C, _pow2_block(C, 32), 32, SPLIT_NHWC


def _pow2_block(n, cap: int) -> int:
    """min(cap, the next power of two of n) as a plain int: a block size is a constexpr,
    and torch.compile may trace with symbolic sizes (this guards on them instead)."""
    return cap if n >= cap else triton.next_power_of_2(max(int(n), 1))


def _instance_norm_act(input: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                       residual: torch.Tensor | None, eps: float, activation: str,
                       negative_slope: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_args("fastgan_triton::instance_norm_act", input, weight, bias, residual, activation)
    x = dense_input(input)
    N, C, H, W = x.shape
    HW = H * W
    acc = stats_dtype(x.dtype)
    out = torch.empty_like(x)
    mean = x.new_empty((N, C), dtype=acc)
    rstd = torch.empty_like(mean)
    if x.numel() == 0:
        mean.fill_(float("nan"))
        rstd.fill_(float("nan"))
        return out, mean, rstd
    res = in_order(residual, x) if residual is not None else x  # x: read only, unused
    # Unused pointer arguments get their own small tensors, never an output's alias (a
    # compiled graph's functionalization of the kernels must see no aliasing outputs).
    unused = x.new_zeros((1,), dtype=acc)
    w = weight.to(acc).contiguous() if weight is not None else unused
    b = bias.to(acc).contiguous() if bias is not None else unused
    sN, sC, sHW, block_c, block_hw, split = _geometry(x)
    S = triton.cdiv(HW, split)
    fused = bool(S == 1)  # a constexpr: a plain bool under symbolic sizes too
    grid = (N * triton.cdiv(C, block_c) * S,)
    shift_n = min(HW, SHIFT_ELEMS)
    eps_hi, eps_lo = split_f64(eps, 2)
    slope_hi, slope_lo = _slope_parts(activation, negative_slope)
    if not fused:
        p1 = x.new_empty((N * C * S,), dtype=torch.float64)
        p2 = torch.empty_like(p1)
        launcher(_fwd_stats_kernel, x.device)[grid](x, p1, p2, mean, C, HW, sN, sC, sHW, S, split, shift_n,
                                                    BLOCK_C=block_c, BLOCK_HW=block_hw)
        s1 = x.new_empty((N * C,), dtype=torch.float64)
        s2 = torch.empty_like(s1)
        _sum_partials(p1, p2, s1, s2, S)
    else:
        s1 = x.new_zeros((1,), dtype=torch.float64)  # unused
        s2 = torch.empty_like(s1)
    launcher(_fwd_kernel, x.device)[grid](
        x, res, out, s1, s2, mean, rstd, w, b, C, HW, sN, sC, sHW, S, split, shift_n, eps_hi, eps_lo,
        slope_hi, slope_lo, ACT=ACT_CODES[activation], HAS_RES=residual is not None,
        HAS_W=weight is not None, HAS_B=bias is not None, FUSED=fused, BLOCK_C=block_c,
        BLOCK_HW=block_hw)
    return out, mean, rstd


def _instance_norm_act_backward(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor | None,
                                bias: torch.Tensor | None, mean: torch.Tensor, rstd: torch.Tensor,
                                activation: str, negative_slope: float
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_args("fastgan_triton::instance_norm_act_backward", input, weight, bias, None, activation)
    x = dense_input(input)
    N, C, H, W = x.shape
    HW = H * W
    acc = stats_dtype(x.dtype)
    dw_dtype, db_dtype = param_grad_dtypes(x, weight, bias)
    dx = torch.empty_like(x)
    if x.numel() == 0:
        return dx, x.new_zeros((C,), dtype=dw_dtype), x.new_zeros((C,), dtype=db_dtype)
    g = in_order(grad, x)
    mean = mean.to(acc).contiguous()
    rstd = rstd.to(acc).contiguous()
    unused = x.new_zeros((1,), dtype=acc)
    w = weight.to(acc).contiguous() if weight is not None else unused
    b = bias.to(acc).contiguous() if bias is not None else unused
    sN, sC, sHW, block_c, block_hw, split = _geometry(x)
    S = triton.cdiv(HW, split)
    fused = bool(S == 1)
    grid = (N * triton.cdiv(C, block_c) * S,)
    act = ACT_CODES[activation]
    slope_hi, slope_lo = _slope_parts(activation, negative_slope)
    sa = x.new_empty((N * C,), dtype=torch.float64)  # per plane: sum(gz)
    sb = torch.empty_like(sa)                          # sum(gz * (x - mean))
    if not fused:
        pa = x.new_empty((N * C * S,), dtype=torch.float64)
        pb = torch.empty_like(pa)
        launcher(_bwd_stats_kernel, x.device)[grid](
            g, x, mean, rstd, w, b, pa, pb, C, HW, sN, sC, sHW, S, split, slope_hi, slope_lo,
            ACT=act, HAS_W=weight is not None, HAS_B=bias is not None,
            BLOCK_C=block_c, BLOCK_HW=block_hw)
        _sum_partials(pa, pb, sa, sb, S)
    launcher(_bwd_kernel, x.device)[grid](
        g, x, dx, mean, rstd, w, b, sa, sb, C, HW, sN, sC, sHW, S, split, slope_hi, slope_lo,
        ACT=act, HAS_W=weight is not None, HAS_B=bias is not None, FUSED=fused,
        BLOCK_C=block_c, BLOCK_HW=block_hw)
    dw = x.new_empty((C,), dtype=torch.float64)
    db = torch.empty_like(dw)  # separate: with float64 parameters they are the outputs
    launcher(_param_kernel, x.device)[(triton.cdiv(C, PARAM_BLOCK),)](sa, sb, rstd, dw, db, N, C, BLOCK=PARAM_BLOCK)
    return dx, dw.to(dw_dtype), db.to(db_dtype)


def _slope_parts(activation: str, negative_slope: float) -> tuple[float, float]:
    """negative_slope as the kernels' float32 parts where leaky_relu uses it; other
    activations never read it, and any value (one float32 parts cannot carry) is taken."""
    return split_f64(negative_slope, 2) if activation == "leaky_relu" else (0.0, 0.0)


def _forward_fake(input, weight, bias, residual, eps, activation, negative_slope):
    return forward_fake("fastgan_triton::instance_norm_act", input, weight, bias, residual, activation)


def _backward_fake(grad, input, weight, bias, mean, rstd, activation, negative_slope):
    return backward_fake("fastgan_triton::instance_norm_act_backward", grad, input, weight, bias, mean, rstd,
                         activation)


instance_norm_act_op = define_op("fastgan_triton::instance_norm_act", _instance_norm_act, _forward_fake)
instance_norm_act_backward_op = define_op("fastgan_triton::instance_norm_act_backward",
                                          _instance_norm_act_backward, _backward_fake)

_setup, _bwd, _setup_bwd, _bwd_bwd = make_autograd(instance_norm_act_backward_op)
instance_norm_act_op.register_autograd(_bwd, setup_context=_setup)
instance_norm_act_backward_op.register_autograd(_bwd_bwd, setup_context=_setup_bwd)


def instance_norm_act(x, weight=None, bias=None, eps=1e-5, activation="relu", negative_slope=0.2, residual=None):
    """The instance_norm_act implementation of the triton back end."""
    return instance_norm_act_op(x, weight, bias, residual, float(eps), activation, float(negative_slope))[0]


INSTANCE_NORM_ACT.impl("triton", instance_norm_act, available=triton_problem)
