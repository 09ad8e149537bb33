"""The patch-whitening first layer of the fast CIFAR-10 trainers (tysam-code's hlb-CIFAR10,
Keller Jordan's airbench): a k x k convolution whose filters are the eigenvectors of the
covariance of the training images' k x k patches, each scaled by 1/sqrt(eigenvalue + eps),
and their negatives (so a following GELU/ReLU passes both signs). The filters are fixed
(a buffer, never trained); the bias is trained.

The layer is data-initialised: :meth:`PatchWhitening.fit_to_inputs` sets the filters from a
batch of the inputs that reach it. The trainer calls it through a generic rule (any module
with ``fit_to_inputs``, recipe field ``data_init_images``), so no model is special-cased.
Until then the filters are the identity basis (and its negative), so the layer is usable
(tests, an untrained build) but does not whiten.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.registry import register_op

DEFAULT_EPS = 5e-4  # added to each eigenvalue before the 1/sqrt scaling (airbench's value)


def image_patches(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """All ``kernel`` x ``kernel`` patches (stride 1, no padding) of ``x`` (N, C, H, W) as
    rows of a (N * (H - k + 1) * (W - k + 1), C * k * k) matrix, in ``conv2d`` weight order
    (channel, row, column)."""
    cols = F.unfold(x.float(), kernel)  # (N, C*k*k, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


class PatchWhitening(nn.Module):
    """k x k conv, stride 1, no padding: ``2 * C * k * k`` output channels (the whitening
    filters, then their negatives), a trained bias, fixed filters in the ``weight`` buffer."""

    def __init__(self, c_in: int, kernel: int = 2, eps: float = DEFAULT_EPS):
        super().__init__()
        self.kernel, self.eps = int(kernel), float(eps)
        d = c_in * self.kernel * self.kernel
        basis = torch.eye(d).view(d, c_in, self.kernel, self.kernel)
        self.register_buffer("weight", torch.cat([basis, -basis]))
        self.bias = nn.Parameter(torch.zeros(2 * d))

    @torch.no_grad()
    def fit_to_inputs(self, x: torch.Tensor) -> None:
        """Called once before training (by the trainer when the recipe asks for it) with a
        batch of this layer's inputs: filters = eigenvectors of the patch covariance (about
        the origin, as airbench: inputs are normalised) / sqrt(eigenvalue + eps), largest
        eigenvalue first, then their negatives."""
        d = self.weight.shape[1] * self.kernel * self.kernel
        cov, count = torch.zeros(d, d, dtype=torch.float64, device=x.device), 0
        for chunk in x.split(512):  # bounded memory: a chunk's patches at a time
            patches = image_patches(chunk, self.kernel).double()
            cov += patches.T @ patches
            count += len(patches)
        cov /= count
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + self.eps)).T
        filters = filters.reshape(self.weight.shape[0] // 2, *self.weight.shape[1:])
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight.dtype))

    def forward(self, x):
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    def extra_repr(self):
        return f"kernel={self.kernel}, eps={self.eps}, out={self.weight.shape[0]}"


@register_op("patch_whiten", family="classic")
def patch_whiten(c_in, c_out, stride, kernel=2, eps=DEFAULT_EPS):
    """Fixed patch-whitening k x k conv (hlb-CIFAR10/airbench), ``c_out = 2 * c_in * k * k``,
    stride 1, no padding; its filters are set from training patches before training
    (recipe ``data_init_images``)."""
    if stride != 1:
        raise ValueError("patch_whiten has stride 1")
    if c_out != 2 * c_in * kernel * kernel:
        raise ValueError(f"patch_whiten of {c_in} channels with kernel {kernel} has "
                         f"{2 * c_in * kernel * kernel} outputs, not {c_out}")
    return PatchWhitening(c_in, kernel, eps)
