"""FitNet and attention transfer against the papers' equations: values and gradients with
respect to the student's features and the learned regressor."""

from __future__ import annotations

import pytest
import torch
from paper_equations import attention_transfer, fitnet

from kdcli.errors import UserError
from kdcli.losses import AttentionTransfer, Features, FitNet


def case(seed: int, student_shape=(4, 4, 4), teacher_shape=(6, 4, 4), batch=3, one_class=False):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 5, generator=generator, dtype=torch.float64)
    targets = torch.full((batch,), 2) if one_class else torch.randint(0, 5, (batch,))
    fs = torch.randn(batch, *student_shape, generator=generator, dtype=torch.float64)
    ft = torch.randn(batch, *teacher_shape, generator=generator, dtype=torch.float64).relu()
    return logits, targets, fs, ft


def built_fitnet(fs, ft, beta=100.0, ce_weight=1.0) -> FitNet:
    loss = FitNet(student_layer="s", teacher_layer="t", beta=beta, ce_weight=ce_weight)
    loss.build({"s": tuple(fs.shape[1:])}, {"t": tuple(ft.shape[1:])})
    return loss


@pytest.mark.parametrize("one_class", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fitnet_matches_the_paper(one_class, dtype):
    logits, targets, fs, ft = case(seed=0, one_class=one_class)
    fs, ft = fs.to(dtype), ft.to(dtype)
    loss = built_fitnet(fs, ft)
    weight = loss.regressor.weight.detach()[:, :, 0, 0].double()

    ours_fs = fs.clone().requires_grad_(True)
    value = loss(logits.float(), None, targets, Features({"s": ours_fs}, {"t": ft}))
    grad_fs, grad_w = torch.autograd.grad(value, [ours_fs, loss.regressor.weight])

    ref_fs = fs.double().requires_grad_(True)
    ref_w = weight.clone().requires_grad_(True)
    expected = fitnet(logits, targets, ref_fs, ft.double(), ref_w, beta=100.0)
    expected_fs, expected_w = torch.autograd.grad(expected, [ref_fs, ref_w])

    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(value.double(), expected, rtol=tol, atol=tol)
    assert grad_fs.dtype == dtype
    torch.testing.assert_close(grad_fs.double(), expected_fs, rtol=tol, atol=tol)
    torch.testing.assert_close(grad_w[:, :, 0, 0].double(), expected_w, rtol=tol, atol=tol)


def test_fitnet_pools_the_larger_map_and_builds_a_linear_adapter_for_vectors():
    logits, targets, fs, _ = case(seed=1)
    ft = torch.randn(3, 6, 2, 2)
    loss = built_fitnet(fs, ft, ce_weight=0.0)
    value = loss(logits.float(), None, targets, Features({"s": fs.float()}, {"t": ft}))
    pooled = torch.nn.functional.avg_pool2d(loss.regressor(fs.float()), 2)
    assert torch.allclose(value, 100.0 * ((pooled - ft) ** 2).mean())

    vectors = FitNet("s", "t")
    vectors.build({"s": (8,)}, {"t": (16,)})
    assert isinstance(vectors.regressor, torch.nn.Linear)
    with pytest.raises(UserError, match="same kind"):
        FitNet("s", "t").build({"s": (8,)}, {"t": (16, 2, 2)})


@pytest.mark.parametrize("one_class", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_attention_transfer_matches_the_paper(one_class, dtype):
    logits, targets, fs1, ft1 = case(seed=2, one_class=one_class)
    _, _, fs2, ft2 = case(seed=3, student_shape=(3, 2, 2), teacher_shape=(8, 2, 2))
    fs1, ft1, fs2, ft2 = (x.to(dtype) for x in (fs1, ft1, fs2, ft2))
    loss = AttentionTransfer(["a", "b"], ["c", "d"], beta=1000.0)

    ours = [fs1.clone().requires_grad_(True), fs2.clone().requires_grad_(True)]
    features = Features({"a": ours[0], "b": ours[1]}, {"c": ft1, "d": ft2})
    value = loss(logits.float(), None, targets, features)
    grads = torch.autograd.grad(value, ours)

    theirs = [fs1.double().requires_grad_(True), fs2.double().requires_grad_(True)]
    pairs = [(theirs[0], ft1.double()), (theirs[1], ft2.double())]
    expected = attention_transfer(logits, targets, pairs, beta=1000.0)
    expected_grads = torch.autograd.grad(expected, theirs)

    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(value.double(), expected, rtol=tol, atol=tol)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert grad.dtype == dtype
        scale = expected_grad.abs().max()
        torch.testing.assert_close(grad.double() / scale, expected_grad / scale, rtol=tol, atol=tol)


def test_attention_transfer_checks_its_layer_lists_and_shapes():
    with pytest.raises(UserError, match="same number"):
        AttentionTransfer(["a", "b"], ["c"])
    with pytest.raises(UserError, match="must be lists"):
        AttentionTransfer("a", "c")
    with pytest.raises(UserError, match=r"\[C, H, W\] maps"):
        AttentionTransfer(["a"], ["c"]).build({"a": (8,)}, {"c": (4, 2, 2)})


def test_attention_is_zero_when_maps_differ_only_in_scale():
    logits, targets, fs, _ = case(seed=4, teacher_shape=(4, 4, 4))
    loss = AttentionTransfer(["a"], ["b"], ce_weight=0.0)
    features = Features({"a": fs.float()}, {"b": 3.0 * fs.float()})
    assert loss(logits.float(), None, targets, features).abs() < 1e-6
