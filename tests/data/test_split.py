import pytest
import torch

from kdcli.data.split import check_fraction, stratified_split
from kdcli.errors import UserError


def test_stratified_split_holds_out_the_fraction_of_each_class():
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 2)
    kept, held = stratified_split(labels, 0.3, seed=0)
    assert torch.bincount(labels[held]).tolist() == [3, 6, 1]
    assert sorted(kept.tolist() + held.tolist()) == list(range(32))
    assert torch.equal(stratified_split(labels, 0.3, seed=0)[1], held)
    assert not torch.equal(stratified_split(labels, 0.3, seed=1)[1], held)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "half", True])
def test_bad_fractions_name_the_key(value):
    with pytest.raises(UserError, match="dataset.val_fraction"):
        check_fraction("dataset.val_fraction", value, allow_zero=True)


def test_zero_is_allowed_only_where_it_means_no_split():
    check_fraction("dataset.val_fraction", 0.0, allow_zero=True)
    with pytest.raises(UserError):
        check_fraction("dataset.test_fraction", 0.0, allow_zero=False)
