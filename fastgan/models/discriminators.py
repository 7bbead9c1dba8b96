"""The reference's discriminators, module for module, so state_dict keys match."""

import torch.nn as nn

from fastgan.models.norm import use_conv_bias


class NLayerDiscriminator(nn.Module):
    """PatchGAN: n_layers stride-2 4x4 convs, one stride-1, then a 1-channel
    stride-1 conv; raw scores, no sigmoid. n_layers=3 is the 70x70 "basic" D
    and maps 256x256 to 30x30."""

    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d):
        super().__init__()
        use_bias = use_conv_bias(norm_layer)
        kw, padw = 4, 1
        layers = [nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw),  # always a bias
                  nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
            layers += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kw, stride=2, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        nf_mult_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        layers += [
            nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kw, stride=1, padding=padw, bias=use_bias),
            norm_layer(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * nf_mult, 1, kw, stride=1, padding=padw),  # always a bias
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: one real/fake score per pixel."""

    def __init__(self, input_nc, ndf=64, norm_layer=nn.BatchNorm2d):
        super().__init__()
        use_bias = use_conv_bias(norm_layer)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1, stride=1, padding=0),  # always a bias
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, stride=1, padding=0, bias=use_bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            # Unlike NLayerDiscriminator's, this last conv follows the bias rule:
            # no bias with batch or none norm (confirmed by the recorded keys).
            nn.Conv2d(ndf * 2, 1, 1, stride=1, padding=0, bias=use_bias),
        )

    def forward(self, x):
        return self.net(x)
