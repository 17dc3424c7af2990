"""Straightforward float64 implementations of each paper's equation, one sample at a time,
written independently of kdcli.losses, to check it against."""

from __future__ import annotations

import torch


def softmax(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max())
    return e / e.sum()


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum_i p_i log(p_i / q_i), with 0 log 0 = 0."""
    terms = [p[i] * (torch.log(p[i]) - torch.log(q[i])) for i in range(len(p)) if p[i] > 0]
    return torch.stack(terms).sum() if terms else p.sum() * 0


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [-torch.log(softmax(logits[b])[targets[b]]) for b in range(len(targets))]
    ).mean()


def hinton_kd(s, t, y, alpha, temperature):
    """Hinton et al. 2015: (1 - alpha) CE + alpha T^2 KL(softmax(t/T) || softmax(s/T))."""
    kd = torch.stack(
        [kl(softmax(t[b] / temperature), softmax(s[b] / temperature)) for b in range(len(y))]
    ).mean()
    return (1 - alpha) * cross_entropy(s, y) + alpha * temperature**2 * kd


def z_score(z: torch.Tensor) -> torch.Tensor:
    """Sun et al. 2024, eq. (8): (z - mean) / sigma, sigma = sqrt(mean((z - mean)^2))."""
    mean = z.sum() / len(z)
    sigma = torch.sqrt(((z - mean) ** 2).sum() / len(z))
    return (z - mean) / (sigma + 1e-7)


def kd_with_logit_standardisation(s, t, y, alpha, temperature):
    zs = torch.stack([z_score(row) for row in s])
    zt = torch.stack([z_score(row) for row in t])
    kd = torch.stack(
        [kl(softmax(zt[b] / temperature), softmax(zs[b] / temperature)) for b in range(len(y))]
    ).mean()
    return (1 - alpha) * cross_entropy(s, y) + alpha * temperature**2 * kd


def dkd(s, t, y, alpha, beta, temperature, ce_weight=1.0, warmup_factor=1.0):
    """Zhao et al. 2022, eqs. (1)-(6): b = [p_gt, 1 - p_gt]; p_hat = p_other / (1 - p_gt)."""
    tckd, nckd = [], []
    for b in range(len(y)):
        ps, pt = softmax(s[b] / temperature), softmax(t[b] / temperature)
        g = int(y[b])
        bs = torch.stack([ps[g], 1 - ps[g]])
        bt = torch.stack([pt[g], 1 - pt[g]])
        others = [i for i in range(len(ps)) if i != g]
        hat_s = ps[others] / (1 - ps[g])
        hat_t = pt[others] / (1 - pt[g])
        tckd.append(kl(bt, bs))
        nckd.append(kl(hat_t, hat_s))
    kd_part = alpha * torch.stack(tckd).mean() + beta * torch.stack(nckd).mean()
    return ce_weight * cross_entropy(s, y) + warmup_factor * temperature**2 * kd_part


def pearson(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    n = len(u)
    mu, mv = u.sum() / n, v.sum() / n
    cov = ((u - mu) * (v - mv)).sum()
    return cov / (torch.sqrt(((u - mu) ** 2).sum()) * torch.sqrt(((v - mv) ** 2).sum()) + 1e-8)


def dist(s, t, y, beta, gamma, temperature, ce_weight=1.0):
    """Huang et al. 2022, eqs. (6)-(10) with the CE term."""
    ys = torch.stack([softmax(row / temperature) for row in s])
    yt = torch.stack([softmax(row / temperature) for row in t])
    batch, classes = ys.shape
    inter = 1 - torch.stack([pearson(ys[i], yt[i]) for i in range(batch)]).mean()
    intra = 1 - torch.stack([pearson(ys[:, j], yt[:, j]) for j in range(classes)]).mean()
    return ce_weight * cross_entropy(s, y) + temperature**2 * (beta * inter + gamma * intra)


def fitnet(s, y, fs, ft, weight, beta, ce_weight=1.0):
    """Romero et al. 2015 hint loss (mean squared error after a 1x1-conv regressor `weight`)."""
    regressed = torch.einsum("oc,bchw->bohw", weight, fs)
    mse = ((regressed - ft) ** 2).sum() / ft.numel()
    return ce_weight * cross_entropy(s, y) + beta * mse


def attention(f: torch.Tensor, p: float) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: Q = vec(sum_c |A_c|^p) / ||vec(...)||_2 for one sample."""
    q = sum(f[c].abs() ** p for c in range(f.shape[0])).flatten()
    return q / torch.sqrt((q**2).sum())


def attention_transfer(s, y, pairs, beta, p=2.0, ce_weight=1.0):
    """CE + beta/2 * sum over pairs of the mean squared difference of attention maps."""
    total = 0.0
    for fs, ft in pairs:
        diffs = [attention(fs[b], p) - attention(ft[b], p) for b in range(fs.shape[0])]
        total = total + torch.stack([(d**2).mean() for d in diffs]).mean()
    return ce_weight * cross_entropy(s, y) + beta / 2 * total
