"""Seeded, stratified splits: the same seed and labels always give the same split."""

from __future__ import annotations

import torch

from kdcli.errors import UserError


def check_fraction(key: str, value: float, *, allow_zero: bool) -> None:
    """A split fraction must leave data on both sides (0 allowed where it means 'no split')."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    low_ok = is_number and (value >= 0.0 if allow_zero else value > 0.0)
    if not low_ok or value >= 1:
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise UserError(f"{key}={value!r} must lie in {bound} (e.g. {key}=0.1).")


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held_out) sample indices, both sorted; `fraction` of each class is held out.

    Each class with at least two samples keeps at least one and holds out at least one.
    """
    generator = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = round(fraction * len(members))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held.append(members[:count])
        kept.append(members[count:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values
