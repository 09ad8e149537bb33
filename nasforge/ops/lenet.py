"""LeNet-5's own layers (LeCun et al. 1998): the partially connected C3 convolution, the
trainable S2/S4 subsampling and the RBF output units. Its scaled tanh is the ``lecun_tanh``
activation (``nasforge.ops.activations``).

Same registry and factory signature as the other ops: ``factory(c_in, c_out, stride, **args)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.ops.layers import require_same_channels
from nasforge.registry import create_activation, register_op


class ConnectionTableConv(nn.Module):
    """A convolution whose output map j reads only the input maps ``table[j]``.

    Only the connected kernels are parameters (LeNet-5's C3: 60 kernels + 16 biases = 1,516);
    the forward pass scatters them into a dense, zero-elsewhere kernel and runs one
    ``F.conv2d``, because no library offers an arbitrary connection table (grouped convolution
    only covers disjoint, equal groups).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, table):
        super().__init__()
        if len(table) != c_out:
            raise ValueError(f"connection table has {len(table)} rows for {c_out} output maps")
        pairs = [(j, i) for j, row in enumerate(table) for i in row]
        if any(not 0 <= i < c_in for _, i in pairs):
            raise ValueError(f"connection table names an input map outside 0..{c_in - 1}")
        self.c_in, self.kernel, self.stride = c_in, kernel, stride
        self.register_buffer("out_index", torch.tensor([j for j, _ in pairs]))
        self.register_buffer("in_index", torch.tensor([i for _, i in pairs]))
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel, kernel))
        self.bias = nn.Parameter(torch.empty(c_out))
        fan_in = len(pairs) / c_out * kernel * kernel  # mean connections per output map
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def dense_weight(self) -> torch.Tensor:
        """The c_out x c_in x k x k kernel, zero where the table has no connection."""
        full = self.weight.new_zeros(self.bias.shape[0], self.c_in, self.kernel, self.kernel)
        return full.index_put((self.out_index, self.in_index), self.weight)

    def forward(self, x):
        return F.conv2d(x, self.dense_weight(), self.bias, self.stride)


@register_op("connection_table_conv", family="classic")
def connection_table_conv(c_in, c_out, stride, table, kernel=5, act="none"):
    """Convolution (no padding) with a partial connection table: output map j reads the input
    maps ``table[j]`` (LeNet-5's C3); then ``act``."""
    return nn.Sequential(ConnectionTableConv(c_in, c_out, kernel, stride, table),
                         create_activation(act, inplace=False) or nn.Identity())


class TrainableSubsampling(nn.Module):
    """LeNet-5's S2/S4: the sum of each non-overlapping ``kernel`` x ``kernel`` window times a
    trainable per-map coefficient, plus a trainable per-map bias (2 parameters per map)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        window_sum = F.avg_pool2d(x, self.kernel) * self.kernel ** 2
        return window_sum * self.weight[:, None, None] + self.bias[:, None, None]


@register_op("trainable_subsample", family="classic")
def trainable_subsample(c_in, c_out, stride, act="none"):
    """LeNet-5's subsampling layer (stride x stride windows, coefficient and bias per map),
    then ``act``."""
    require_same_channels("trainable_subsample", c_in, c_out)
    return nn.Sequential(TrainableSubsampling(c_in, stride),
                         create_activation(act, inplace=False) or nn.Identity())


class RBFOutput(nn.Module):
    """Euclidean radial basis function units: y_i = sum_j (x_j - w_ij)^2 over the channels j
    (at each position; LeNet-5 applies it to a 1 x 1 map), returned negated as logits (the
    smallest distance wins). The prototypes w_i are fixed +-1 codes, a buffer, not parameters:
    LeCun et al. 1998 (section II.B) chose them by hand (stylized 7x12 bitmaps) and kept them
    fixed; they are drawn here from a seeded generator, as the bitmaps are not published as
    data."""

    def __init__(self, in_features: int, units: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, 2, (units, in_features), generator=generator) * 2.0 - 1.0
        # units x C x 1 x 1, broadcast against N x 1 x C x H x W: the buffer is used as is, so
        # torch.fx (the py export) sees the buffer rather than a derived constant
        self.register_buffer("prototypes", codes[:, :, None, None])

    def forward(self, x):
        return -(torch.unsqueeze(x, 1) - self.prototypes).square().sum(2)


@register_op("rbf_output", family="classic")
def rbf_output(c_in, c_out, stride, seed=0):
    """LeNet-5's output layer: ``c_out`` RBF units with fixed +-1 prototypes (no trainable
    parameters); logits are the negated squared distances."""
    return RBFOutput(c_in, c_out, seed)
