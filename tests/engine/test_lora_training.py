"""LoRA in the one loop (engine/loop.py, `Recipe.lora`): the optimizer holds the adapters
alone, the model's own weights stay frozen, and the fit ends with the adapters merged: the
plain architecture, whose model file kd eval rebuilds from its config (config/from_files.py)
computing what the trained model computes. A resumed fit restores the adapters."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import asdict

import pytest
import torch
from stopping_losses import SignalAt

from kdcli.config.eval_config import build_from_checkpoint
from kdcli.data.memory import EpochLoader, Split
from kdcli.data.text import text_info
from kdcli.engine.interrupt import Interrupted, handle_signals
from kdcli.engine.loop import Job, Recipe, Trainee, Training, fit
from kdcli.engine.state import TrainState
from kdcli.losses import CrossEntropy
from kdcli.models.lm.gpt import GPT
from kdcli.models.lora import Lora
from kdcli.store.checkpoint import read_model_file, save_model
from kdcli.tasks.lm import TASK

if importlib.util.find_spec("peft") is None:
    pytest.skip("kdcli[lora] absent", allow_module_level=True)

CPU = torch.device("cpu")
INFO = text_info("t", 13, 8)
# gpt_tiny's config at width 16 (what the model file records, as kd train's student.pt does)
MODEL = {"layers": 1, "heads": 2, "width": 16, "dropout": 0.0}
LORA = Lora(("mlp.0", "proj", "qkv"), r=2, alpha=4.0)


def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(13, image_size=8, **MODEL)


def loader() -> EpochLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 13, (64, 8), generator=generator)
    return EpochLoader(Split(x, torch.roll(x, -1, 1)), INFO, 16, train=True)


def recipe(epochs: int = 2) -> Recipe:
    return Recipe(
        epochs,
        functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
        functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs),
        lora=LORA,
    )


def test_the_optimizer_holds_the_adapters_alone():
    model = gpt()
    training = Training(
        Trainee(model, loader(), CrossEntropy()), recipe(), Job("s", TASK, CPU), None
    )
    names = {id(p): name for name, p in model.named_parameters()}
    held = [names[id(p)] for group in training.optimizer.param_groups for p in group["params"]]
    assert len(held) == 2 * 3  # A and B of 3 layers in 1 block
    assert all(".lora_A." in name or ".lora_B." in name for name in held), held


def test_a_fit_trains_the_adapters_and_ends_with_the_plain_model_merged(tmp_path):
    model, plain = gpt(), gpt().state_dict()
    fit(Trainee(model, loader(), CrossEntropy()), recipe(), Job("s", TASK, CPU))
    assert isinstance(model, GPT) and list(model.state_dict()) == list(plain)
    for name, weight in model.state_dict().items():
        adapted = any(f".{layer}.weight" in name for layer in LORA.targets)
        assert torch.equal(weight, plain[name]) != adapted, f"{name}: frozen unless adapted"
    assert all(p.requires_grad for p in model.parameters())

    path = tmp_path / "student.pt"
    save_model(path, model, model="gpt_tiny", model_config=MODEL, dataset=asdict(INFO))
    rebuilt = build_from_checkpoint(read_model_file(path), INFO)  # what kd eval runs
    tokens = next(loader().epoch(0)).x
    torch.testing.assert_close(rebuilt(tokens), model.eval()(tokens))


def test_a_fit_stopped_mid_epoch_resumes_its_adapters_to_the_same_weights(tmp_path):
    straight = gpt()
    fit(Trainee(straight, loader(), CrossEntropy()), recipe(), Job("s", TASK, CPU))
    path, stopped = tmp_path / "state.pt", gpt()
    with handle_signals(), pytest.raises(Interrupted):
        fit(
            Trainee(stopped, loader(), SignalAt(6)),
            recipe(),
            Job("s", TASK, CPU, state=TrainState(path)),
        )
    assert any(".lora_B." in key for key in torch.load(path, weights_only=True)["model"])
    resumed = gpt()
    fit(
        Trainee(resumed, loader(), CrossEntropy()),
        recipe(),
        Job("s", TASK, CPU, state=TrainState(path)),
    )
    resumed_weights = resumed.state_dict()
    for name, weight in straight.state_dict().items():
        assert torch.equal(weight, resumed_weights[name]), name
