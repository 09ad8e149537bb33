"""Helpers for tests that compare nasforge models with reference implementations."""
import torch


def randomize_bn(model, seed: int = 0):
    """Random BN affine parameters and running statistics, so an imported model's logits are
    checked against non-trivial normalization (fresh BN layers are the identity)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
