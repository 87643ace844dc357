"""Compact Y-channel x3 super-resolution network (SRVGGNetCompact style).

y = DepthToSpace_s(body(x)) + ResizeBilinear_s(x)   (half-pixel centres)
body = conv3x3(1->F) PReLU, n x [conv3x3(F->F) PReLU], conv3x3(F->s*s)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class CompactSR(nn.Module):
    def __init__(self, scale=3, feats=32, n_body=7):
        super().__init__()
        self.scale, self.feats, self.n_body = scale, feats, n_body
        layers = [nn.Conv2d(1, feats, 3, padding=1), nn.PReLU(feats)]
        for _ in range(n_body):
            layers += [nn.Conv2d(feats, feats, 3, padding=1), nn.PReLU(feats)]
        layers += [nn.Conv2d(feats, scale * scale, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.shuffle = nn.PixelShuffle(scale)  # == ONNX DepthToSpace mode=CRD
        # Start as the bilinear baseline: zero the last conv.
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)

    def forward(self, x):
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear",
                             align_corners=False)
        return self.shuffle(self.body(x)) + base


def count_params(m):
    return sum(p.numel() for p in m.parameters())


def flops_per_input_pixel(scale=3, feats=32, n_body=7):
    """Multiply-adds counted as 2 FLOPs; PReLU (1 FLOP/elem), residual bilinear
    (~8 FLOPs per output pixel) and add included."""
    conv = 2 * 9 * (1 * feats + n_body * feats * feats + feats * scale * scale)
    prelu = (n_body + 1) * feats * 2
    resize_add = scale * scale * (8 + 1)
    return conv + prelu + resize_add
