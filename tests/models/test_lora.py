"""LoRA adapters (models/lora.py): which layers a name adapts, which cannot be adapted (tied
weights, unsupported kinds), and that merging leaves the plain model computing what the
adapted one computed, for the built-in GPT and for a Hugging Face GPT-2 (Conv1D layers)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from kdcli.models.lm.gpt import GPT
from kdcli.models.lora import Adapters, Lora, adaptable_layers, short_names, target_problem

if importlib.util.find_spec("peft") is None:
    pytest.skip("kdcli[lora] absent", allow_module_level=True)


def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(13, image_size=8, layers=2, heads=2, width=16, dropout=0.0).eval()


def test_a_name_matches_every_layer_whose_path_ends_with_it():
    model = gpt()
    # (the token embedding is tied to the head: neither is adaptable)
    expected = ["positions", "qkv", "proj", "mlp.0", "mlp.2"]
    assert short_names(adaptable_layers(model)) == expected
    assert target_problem(model, ["qkv", "mlp.0"]) is None
    assert target_problem(model, ["blocks.1.proj"]) is None
    assert "no layer that LoRA can adapt is named 'norm1'" in target_problem(model, ["norm1"])
    assert "named 'qkvv'" in target_problem(model, ["qkv", "qkvv"])
    assert target_problem(model, []) == "no layers are named"


def test_the_head_tied_to_the_token_embedding_is_not_adaptable():
    problem = target_problem(gpt(), ["head"])
    assert problem is not None and "head, which shares its weight with tokens (tied)" in problem


def test_settings_get_defaults_and_the_names_are_sorted_once_each():
    assert Lora.from_settings(None) is None
    lora = Lora.from_settings({"target_modules": ["proj", "qkv", "proj"]})
    assert lora == Lora(("proj", "qkv"), r=8, alpha=16.0, dropout=0.0)
    assert Lora.from_settings({"target_modules": ["qkv"], "r": 4, "alpha": 8}) == Lora(
        ("qkv",), 4, 8.0, 0.0
    )


def changed(adapters: Adapters) -> None:
    """Give the adapters weights (B starts at zero: the adapted model is the model)."""
    for name, parameter in adapters.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter.data, std=0.1)


def test_adapters_freeze_the_model_and_merging_keeps_what_it_computes():
    model, tokens = gpt(), torch.randint(0, 13, (2, 8))
    plain_keys, before = set(model.state_dict()), model(tokens)
    adapters = Adapters(model, Lora(("qkv", "proj", "mlp.0"), r=2, alpha=4))
    torch.testing.assert_close(model(tokens), before)  # B = 0
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 3 * 2  # A and B, 3 layers, 2 blocks
    changed(adapters)
    adapted = model(tokens)
    assert not torch.allclose(adapted, before)
    assert adapters.merge() is model
    assert isinstance(model, GPT) and set(model.state_dict()) == plain_keys
    assert all(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(model(tokens), adapted, rtol=0, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="kdcli[hf] absent")
def test_a_hugging_face_gpt2s_conv1d_layers_merge_too():
    from transformers import GPT2Config, GPT2LMHeadModel

    from kdcli.models.lm.hf import CausalLM

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=20, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    model = CausalLM(GPT2LMHeadModel(config).eval(), 20, None)
    names = short_names(adaptable_layers(model))
    assert {"c_attn", "c_proj", "c_fc"} <= set(names) and "lm_head" not in names  # tied
    tokens = torch.randint(0, 20, (2, 8))
    plain_keys = set(model.state_dict())
    adapters = Adapters(model, Lora(("c_attn", "c_fc"), r=2, alpha=4))
    changed(adapters)
    adapted = model(tokens)
    adapters.merge()
    assert set(model.state_dict()) == plain_keys
    torch.testing.assert_close(model(tokens), adapted, rtol=0, atol=1e-5)
