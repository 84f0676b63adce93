"""Dense N x N oracles of the MMD formulas, written as plainly as possible (float64)."""

import torch


def gram(x, y, bandwidth):
    return torch.exp(-((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / (2 * bandwidth))


def shuffle_mmd(x, y, bandwidths, n=None, clamp=False):
    """U-statistics within x and y (diagonal excluded), V-statistic across, normalized by
    n (the number of rows unless given); the published form uses n = clips and clamps."""
    rows = x.shape[0]
    total = 0.0
    for a in bandwidths:
        kxx, kyy, kxy = gram(x, x, a), gram(y, y, a), gram(x, y, a)
        if n is None:
            off = ~torch.eye(rows, dtype=torch.bool)
            value = (kxx[off].sum() + kyy[off].sum()) / (rows * (rows - 1)) - 2 * kxy.mean()
        else:
            value = ((kxx.sum() - n) + (kyy.sum() - n)) / (n * (n - 1)) - 2 * kxy.sum() / n**2
        total = total + (value.clamp(min=0) if clamp else value)
    return total


def exact_mmd(x, dims, bandwidths):
    """||mean embedding of the joint - mean embedding of the product of marginals||^2,
    expanded with the product structure of the Gaussian kernel."""
    blocks = x.split(dims, dim=1)
    total = 0.0
    for a in bandwidths:
        grams = [gram(b, b, a) for b in blocks]
        joint = torch.stack(grams).prod(0).mean()
        cross = torch.stack([g.mean(1) for g in grams]).prod(0).mean()
        product = torch.stack([g.mean() for g in grams]).prod()
        total = total + joint - 2 * cross + product
    return total


def exact_mmd_by_enumeration(x, dims, bandwidth):
    """The same quantity from its definition: every combination of marginal rows is a
    sample of the product distribution (N^K of them; tiny inputs only)."""
    blocks = x.split(dims, dim=1)
    n = x.shape[0]
    grids = torch.cartesian_prod(*[torch.arange(n)] * len(blocks))
    if grids.ndim == 1:
        grids = grids[:, None]
    product = torch.cat([b[grids[:, k]] for k, b in enumerate(blocks)], dim=1)
    return (gram(x, x, bandwidth).mean() - 2 * gram(x, product, bandwidth).mean()
            + gram(product, product, bandwidth).mean())
