"""The op calls the recording makes (phase 1, record.py): (name, callable) pairs, each
calling a fastgan op forward and backward on CPU tensors (values never read: the
kernels are not run) of every dtype, both layouts and the shapes of a scope: default
(CycleGAN's real shapes and a few odd ones, a covering pick of the combinations) or
full (more shapes, every activation/affine/layout combination). Scenarios named
"core ..." (CycleGAN's 3x3 residual convolution in bf16 and tf32, channels_last) have
every config compiled whatever the selection (variants.select_covering).
"""

from __future__ import annotations


def _dtypes():
    import torch

    return [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _make(shape, dtype, layout, requires_grad=False):
    import torch

    t = torch.empty(shape, dtype=dtype)  # values are never read: the kernels are not run
    if layout == "channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_(requires_grad)


def _scenarios(scope):
    """(name, callable) pairs, each calling the fastgan ops forward and backward."""
    import torch

    import fastgan.ops as ops
    from fastgan.ops import _reflect_conv2d

    full = scope == "full"
    layouts = ["contiguous", "channels_last"]
    out = []

    # ------------------------------------------------------------------ l1_loss
    l1_shapes = [(1, 3, 256, 256), (2, 3, 5, 7)] + ([(7,), (3, 1000, 1111)] if full else [])
    for dtype in _dtypes():
        for shape in l1_shapes:
            for layout in layouts if len(shape) == 4 else ["contiguous"]:
                def run(shape=shape, dtype=dtype, layout=layout):
                    x = _make(shape, dtype, layout, True)
                    t = _make(shape, dtype, layout, True)
                    ops.l1_loss(x, t, 10.0).backward()
                out.append((f"l1_loss {dtype} {shape} {layout}", run))

    # -------------------------------------------------------------- cycle_losses
    cyc_shapes = [((1, 3, 256, 256), (1, 3, 256, 256)), ((2, 3, 5, 7), (2, 3, 5, 7))]
    if full:
        cyc_shapes += [((1, 3, 64, 64), (2, 3, 40, 40))]
    for dtype in _dtypes():
        for sa, sb in cyc_shapes:
            for layout in layouts:
                for idt in (True, False):
                    for real_grad in ((False, True) if full or dtype == torch.float32 else (False,)):
                        def run(sa=sa, sb=sb, dtype=dtype, layout=layout, idt=idt, real_grad=real_grad):
                            real_A = _make(sa, dtype, layout, real_grad)
                            real_B = _make(sb, dtype, layout, real_grad)
                            rec_A = _make(sa, dtype, layout, True)
                            rec_B = _make(sb, dtype, layout, True)
                            idt_A = _make(sb, dtype, layout, True) if idt else None
                            idt_B = _make(sa, dtype, layout, True) if idt else None
                            losses = ops.cycle_losses(real_A, rec_A, real_B, rec_B, idt_A, idt_B, 10.0, 10.0, 0.5)
                            losses.values.sum().backward()
                        out.append((f"cycle_losses {dtype} {sa}/{sb} {layout} idt={idt} real_grad={real_grad}", run))
    # only rec_A needs a gradient: REC_A alone, the others not written
    for dtype in _dtypes():
        def run(dtype=dtype):
            s = (2, 3, 8, 8)
            rec_A = _make(s, dtype, "contiguous", True)
            others = [_make(s, dtype, "contiguous") for _ in range(3)]
            ops.cycle_losses(others[0], rec_A, others[1], others[2]).values.sum().backward()
        out.append((f"cycle_losses {dtype} rec_A grad only", run))

    # ---------------------------------------------------------- instance_norm_act
    # (activation, affine weight, affine bias, residual): CycleGAN's generator (relu, no
    # affine; none + residual in a residual block), its discriminator (leaky_relu), the rest
    combos = [("relu", False, False, False), ("none", False, False, True), ("leaky_relu", False, False, False),
              ("relu", True, True, False), ("leaky_relu", True, False, True), ("none", False, True, False)]
    # NCHW: planes of up to SPLIT_NCHW = 4096 pixels are fused (64x64, 33x35, 5x7), larger
    # ones split (256x256, 300x300); channels_last: up to SPLIT_NHWC = 512 pixels (5x7,
    # 1x1 fused, the others split). BLOCK_C: 1 (NCHW), 32 (C >= 32), 4, 2, 1 (C = 3, 2, 1)
    in_shapes = [(1, 64, 256, 256), (1, 256, 64, 64), (1, 2, 300, 300), (2, 3, 5, 7), (3, 70, 33, 35),
                 (1, 40, 32, 32), (1, 1, 1, 1)]
    for dtype in _dtypes():
        for si, shape in enumerate(in_shapes):
            for li, layout in enumerate(layouts):
                picks = combos if full else [combos[(si * 2 + li) % len(combos)],
                                             combos[(si * 2 + li + 3) % len(combos)]]
                for act, w, b, res in picks:
                    def run(shape=shape, dtype=dtype, layout=layout, act=act, w=w, b=b, res=res):
                        C = shape[1]
                        x = _make(shape, dtype, layout, True)
                        weight = torch.empty(C, dtype=dtype).requires_grad_() if w else None
                        bias = torch.empty(C, dtype=dtype).requires_grad_() if b else None
                        residual = _make(shape, dtype, layout, True) if res else None
                        y = ops.instance_norm_act(x, weight, bias, 1e-5, act, 0.2, residual)
                        y.backward(torch.empty_like(y))
                    out.append((f"instance_norm_act {dtype} {shape} {layout} {act} w={w} b={b} res={res}", run))

    # ------------------------------------------------------------- reflect_conv2d
    # (N, C_in, C_out, H, W, kernel, stride, padding, bias): CycleGAN's stem, residual
    # block and head convolutions, a strided one and a 1x1 (no padding)
    convs = [(1, 3, 64, 256, 256, 7, 1, 3, True), (1, 256, 256, 64, 64, 3, 1, 1, True),
             (1, 64, 3, 256, 256, 7, 1, 3, True), (2, 32, 48, 17, 19, 3, 2, 1, False),
             (2, 16, 8, 9, 9, 1, 1, 0, False)]
    if full:
        convs += [(1, 128, 64, 128, 128, 3, 2, 1, True), (4, 3, 5, 6, 7, 3, 1, 2, True)]
    conv_runs = []
    for dtype in _dtypes():
        tf32s = (True, False) if dtype == torch.float32 else (False,)
        for tf32 in tf32s:
            for ci, (n, cin, cout, h, w, k, s, p, has_bias) in enumerate(convs):
                for li, layout in enumerate(layouts):
                    if not full and (ci + li + int(tf32)) % 2 and cin != 256:  # one layout per dtype
                        continue
                    conv_runs.append((dtype, tf32, (n, cin, cout, h, w, k, s, p, has_bias), layout))
    for dtype, tf32, (n, cin, cout, h, w, k, s, p, has_bias), layout in conv_runs:
        def run(dtype=dtype, tf32=tf32, n=n, cin=cin, cout=cout, h=h, w=w, k=k, s=s, p=p, has_bias=has_bias,
                layout=layout):
            saved = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = tf32
            try:
                x = _make((n, cin, h, w), dtype, layout, True)
                weight = _make((cout, cin, k, k), dtype, layout, True)
                bias = torch.empty(cout, dtype=dtype).requires_grad_() if has_bias else None
                with _reflect_conv2d.force_choice("triton"):
                    y = ops.reflect_conv2d(x, weight, bias, s, p)
                    y.backward(torch.empty_like(y))
            finally:
                torch.backends.cudnn.allow_tf32 = saved
        # core: CycleGAN's residual-block convolution in its training dtypes, channels_last:
        # every config of it is compiled whatever the selection
        core = (cin, cout, k) == (256, 256, 3) and layout == "channels_last" and (dtype == torch.bfloat16 or tf32)
        out.append((f"{'core ' if core else ''}reflect_conv2d {dtype}{' tf32' if tf32 else ''} N{n} {cin}->{cout} "
                    f"{h}x{w} k{k} s{s} p{p} bias={has_bias} {layout}", run))
    return out
