"""Selective kernel networks (Li et al. 2019, SKNet): attention over convolution kernels.

``sk_conv_3x3_5x5`` is the whole split-fuse-select unit as one searchable cell op (NASNet op
conventions, ``nasforge.ops.nasnet``); ``sk_select`` is the select step alone as a combine, for
the zoo's SKNets, which write the branches, the global pooling and the 1x1 convs of the
attention as ordinary graph nodes. The convolutions use PyTorch's symmetric padding, as timm
(the reference the op is checked against) does; it equals TF 'SAME' at stride 1 and gives the
same output size at stride 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.ops.attention import REDUCTION
from nasforge.ops.layers import batch_norm
from nasforge.registry import CombineSpec, register_combine, register_op

SK_MIN_ATTENTION = 32  # channels: SKNet's L, the floor of the selection bottleneck d


class SelectiveKernel(nn.Module):
    """SKNet's selective-kernel convolution (Li et al. 2019): split, fuse, select.

    Split: a 3x3 and a dilated 3x3 branch (dilation 2, the paper's 5x5 receptive field), each
    conv -> BN -> ReLU on the whole input. Fuse: s = avg pool of their sum, z = ReLU(BN(W s))
    with d = max(C / r, L) channels. Select: per-channel softmax over the branches from a second
    1x1. timm's ``SelectiveKernel`` with ``split_input=False`` is the same network (timm splits
    the input between the branches by default, which the paper does not); timm is only a test
    dependency, hence this copy of the structure.
    """

    def __init__(self, c_in, c_out, stride=1, dilations=(1, 2), groups=1,
                 attention: int | None = None):
        super().__init__()
        self.paths = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, d, d, groups, bias=False),
                          batch_norm(c_out), nn.ReLU(inplace=True)) for d in dilations)
        attention = attention or max(c_out // REDUCTION, SK_MIN_ATTENTION)
        self.fc_reduce = nn.Conv2d(c_out, attention, 1, bias=False)
        self.bn = batch_norm(attention)
        self.fc_select = nn.Conv2d(attention, c_out * len(dilations), 1, bias=False)

    def forward(self, x):
        paths = torch.stack([p(x) for p in self.paths], 1)  # N x paths x C x H x W
        z = F.relu(self.bn(self.fc_reduce(paths.sum(1).mean((2, 3), keepdim=True))))
        n, c = z.shape[0], paths.shape[2]
        weights = torch.softmax(self.fc_select(z).view(n, len(self.paths), c, 1, 1), 1)
        return (paths * weights).sum(1)


@register_op("sk_conv_3x3_5x5", family="sknet")
def sk_conv_3x3_5x5(c_in, c_out, stride):
    """ReLU -> selective kernel over a 3x3 and a 5x5-field (dilated 3x3) branch (Li et al.
    2019, SKNet)."""
    return nn.Sequential(nn.ReLU(inplace=False), SelectiveKernel(c_in, c_out, stride))


def _sk_select(tensors):
    """``tensors`` = [attention logits (N x M*C x 1 x 1), path_1 .. path_M (N x C x H x W)]:
    softmax over the M paths per channel, then the weighted sum of the paths."""
    logits, paths = tensors[0], tensors[1:]
    n, mc = logits.shape[:2]
    weights = torch.softmax(logits.reshape(n, len(paths), mc // len(paths), 1, 1), dim=1)
    out = paths[0] * weights[:, 0]
    for m, path in enumerate(paths[1:], 1):
        out = out + path * weights[:, m]
    return out


def _sk_channels(channels: list[int]) -> int:
    attention, paths = channels[0], channels[1:]
    if len(set(paths)) != 1 or attention != sum(paths):
        raise ValueError(f"sk_select needs M equal paths and M x C attention channels, got "
                         f"attention {attention} and paths {paths}")
    return paths[0]


SK_SELECT = register_combine(CombineSpec(
    "sk_select", apply=_sk_select, channels=_sk_channels, commutative=False, min_inputs=3,
    doc="selective kernel fuse (Li et al. 2019, Fig. 1): inputs [attention logits, paths...]; "
        "per-channel softmax over the paths weights their sum"))
