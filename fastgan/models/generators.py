"""The reference's generators, module for module, so state_dict keys match.

Index positions inside each nn.Sequential are part of the checkpoint format
(`model.10.conv_block.5.weight`, `model.model.1.model.3...`): do not insert,
remove or reorder modules, even parameter-free ones.
"""

import torch
import torch.nn as nn

from fastgan.models.norm import use_conv_bias

_PADDINGS = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zero": None}
PADDING_TYPES = tuple(_PADDINGS)


class ResnetBlock(nn.Module):
    """x + conv_block(x), conv_block = pad, conv3x3, norm, ReLU, [Dropout], pad, conv3x3, norm."""

    def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        super().__init__()
        if padding_type not in _PADDINGS:
            raise ValueError(
                f"unknown padding type {padding_type!r}; valid: {', '.join(_PADDINGS)}"
            )
        pad = _PADDINGS[padding_type]
        # With zero padding the conv pads itself and there is no pad module,
        # which shifts every later index down by one (as in the reference).
        conv_padding = 1 if pad is None else 0

        def padded_conv():
            layers = [] if pad is None else [pad(1)]
            return layers + [nn.Conv2d(dim, dim, 3, padding=conv_padding, bias=use_bias)]

        layers = padded_conv() + [norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += padded_conv() + [norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, n_blocks ResnetBlocks, two
    transposed-conv upsamplings, c7s1-output_nc, Tanh; one Sequential `model`."""

    def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d,
                 use_dropout=False, n_blocks=6, padding_type="reflect"):
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        use_bias = use_conv_bias(norm_layer)
        # The outer 7x7 convs always use reflection padding, whatever padding_type.
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, 7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            mult = 2 ** i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True),
            ]
        mult = 2 ** n_downsampling
        for _ in range(n_blocks):
            layers.append(ResnetBlock(ngf * mult, padding_type, norm_layer, use_dropout, use_bias))
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                   output_padding=1, bias=use_bias),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, output_nc, 7, padding=0),  # always has a bias
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down, submodule, up; every level but the outermost
    returns cat([x, model(x)], 1)."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None,
                 outermost=False, innermost=False, norm_layer=nn.BatchNorm2d,
                 use_dropout=False):
        super().__init__()
        self.outermost = outermost
        use_bias = use_conv_bias(norm_layer)
        if input_nc is None:
            input_nc = outer_nc
        # Module creation order follows the reference so that construction
        # consumes the RNG in the same order.
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        # inplace=True is load-bearing, not an optimization: the LeakyReLU runs in
        # place on this block's input x, so the skip half of cat([x, model(x)])
        # carries LeakyReLU(x), not x. That is what the reference computes.
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm_layer(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm_layer(outer_nc)

        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        # `x` is read after self.model(x) has run its in-place LeakyReLU on it.
        y = self.model(x)
        return torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    """U-Net with num_downs stride-2 levels (7: unet_128, 8: unet_256); input
    sides must be divisible by 2**num_downs."""

    def __init__(self, input_nc, output_nc, num_downs, ngf=64,
                 norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=None,
                                        norm_layer=norm_layer, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block,
                                            norm_layer=norm_layer, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm_layer=norm_layer)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                             outermost=True, norm_layer=norm_layer)

    def forward(self, x):
        return self.model(x)

