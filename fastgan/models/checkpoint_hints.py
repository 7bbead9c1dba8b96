"""Why a checkpoint does not fit: guesses from its keys, for CheckpointError messages."""

import re


def hints(ckpt, mine, missing, unexpected, mismatched):
    """Likely causes of a mismatch, from {key: shape} of the checkpoint and the network."""
    found = []
    arch_ckpt, arch_net = _guess_arch(ckpt), _guess_arch(mine)
    if arch_ckpt != arch_net:
        found.append(f"the checkpoint looks like {arch_ckpt}, the network is {arch_net}: "
                     "check --netG / --netD / --n_layers_D (or is this the other network's file?)")
    for hint in (_padding_hint(ckpt, mine), _dropout_hint(ckpt, mine)):
        if hint:
            found.append(hint)
    norm_ckpt, norm_net = _guess_norm(ckpt), _guess_norm(mine)
    if norm_ckpt != norm_net:
        found.append(f"the checkpoint looks like norm={norm_ckpt}, the network was built with "
                     f"norm={norm_net}: check --norm")
    if not found and mismatched and not missing and not unexpected:
        found.append("same layers, different sizes: check --ngf / --ndf and --input_nc / "
                     "--output_nc (a pix2pix D takes input_nc + output_nc channels)")
    if not found:
        found.append("the checkpoint was made by a different architecture or options")
    return found


_RESNET_CONV = re.compile(r"^model\.(\d+)\.conv_block\.(\d+)\.weight$")


def _block_conv_positions(shapes):
    """Positions of the 4-d conv weights inside ResnetBlock.conv_block."""
    return sorted({int(m.group(2)) for k, s in shapes.items()
                   if (m := _RESNET_CONV.match(k)) and len(s) == 4})


def _padding_hint(ckpt, mine):
    # a reflect or replicate block starts with its pad layer (conv at 1), a zero one with the
    # conv itself (conv at 0, padding=1)
    a, b = _block_conv_positions(ckpt), _block_conv_positions(mine)
    if not a or not b or (a[0] == 0) == (b[0] == 0):
        return None
    padding = {True: "zero", False: "reflect or replicate"}
    return (f"the checkpoint's residual blocks start with a conv at conv_block.{a[0]}, the network's at "
            f"conv_block.{b[0]}: the checkpoint was trained with --padding_type {padding[a[0] == 0]}, the "
            f"network built with {padding[b[0] == 0]}: check --padding_type")


def _dropout_hint(ckpt, mine):
    a, b = _block_conv_positions(ckpt), _block_conv_positions(mine)
    if len(a) != 2 or len(b) != 2 or a[0] != b[0]:
        return None
    # Dropout(0.5) sits between the two convs and shifts the second by one.
    if a[1] == b[1] + 1:
        return (f"the checkpoint's residual blocks have their second conv at conv_block.{a[1]}, "
                f"the network's at conv_block.{b[1]}: the checkpoint was trained with dropout and the "
                "network built without it (--no_dropout, or a cyclegan run's default): leave out "
                "--no_dropout (a cyclegan run's generator: test it alone with --model test, whose default "
                "keeps dropout), or in Python build it with use_dropout=True")
    if a[1] + 1 == b[1]:
        return (f"the checkpoint's residual blocks have their second conv at conv_block.{a[1]}, "
                f"the network's at conv_block.{b[1]}: the checkpoint was trained without dropout "
                "(--no_dropout) and the network built with it: add --no_dropout, or in Python build "
                "it with use_dropout=False")
    return None


def _guess_arch(shapes):
    keys = list(shapes)
    if any(k.startswith("net.") for k in keys):
        return "a pixel discriminator"
    if any(k.startswith("model.model.") for k in keys):
        depth = max(k.count("model.") for k in keys) - 1
        return f"unet_{2 ** depth}" if depth in (7, 8) else f"a U-Net with {depth} levels"
    blocks = {int(m.group(1)) for k in keys if (m := _RESNET_CONV.match(k))}
    if blocks:
        return f"resnet_{len(blocks)}blocks"
    conv_in = [s[1] for k, s in shapes.items() if k.startswith("model.") and len(s) == 4]
    if conv_in:
        return f"an NLayerDiscriminator with n_layers={len(conv_in) - 2}"
    return "an unknown network"


def _guess_norm(shapes):
    """Which --norm made these keys, from the reference's bias rule."""
    # a batch norm's running stats sit beside its weight (affine); an instance norm's stray ones
    # (a checkpoint of PyTorch before 0.4) beside none
    stats = [k[: -len(".running_mean")] for k in shapes if k.endswith(".running_mean")]
    if any(len(shapes.get(p + ".weight", ())) == 1 for p in stats):
        return "batch"  # or syncbatch: same keys
    convs = [k[: -len(".weight")] for k, s in shapes.items() if k.endswith(".weight") and len(s) == 4]
    all_biased = bool(convs) and all(c + ".bias" in shapes for c in convs)
    affine = any(k.endswith(".weight") and len(s) == 1 for k, s in shapes.items())
    if all_biased:
        return "instance_affine" if affine else "instance"
    return "none"
