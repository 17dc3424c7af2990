"""Bad input: one short message naming the key or file, exit 2, nothing written."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from kdcli.config.build import build_model
from kdcli.config.checks import check_overrides
from kdcli.config.device import check_device, resolve_device
from kdcli.data import DatasetInfo
from kdcli.errors import UserError
from kdcli.store.checkpoint import load_model, read_state_dict

LINUX = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["teacher=resnet5O"], ("Did you mean", "resnet50")),
        (["loss.alpah=0.5"], "Did you mean loss.alpha"),
        (["loss.alpha=1.5"], "loss.alpha=1.5 must be a number in [0, 1]"),
        (["teacher.checkpoint=missing.pt"], "teacher.checkpoint=missing.pt: no such file"),
        (["loss.alpha=0.1,0.5"], "add -m"),
        (["-m", "loss.alpha=0.5,1.5"], "loss.alpha=1.5 must be a number in [0, 1]"),
        (["loss.alpha=0.5,1.5", "-m"], "loss.alpha=1.5 must be a number in [0, 1]"),
        (["loss=kdd"], "Did you mean kd"),
        (["student.optimizer.momentum=0"], "student.optimizer could not be built: Nesterov"),
        (["teacher.optimizer.lr=${nope}"], "teacher.optimizer.lr: its value could not be"),
        pytest.param(["cache_dir=/proc/x"], "cache_dir=/proc/x: kd cannot make", marks=LINUX),
        pytest.param(
            ["hydra.run.dir=/proc/forbidden"], "hydra.run.dir=/proc/forbidden: kd", marks=LINUX
        ),
        pytest.param(
            ["hydra.sweep.dir=/proc/x", "seed=0,1", "-m"], "hydra.sweep.dir=/proc/x", marks=LINUX
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(kd, tmp_path, args, expected):
    result = kd("train", *args)
    assert result.returncode == 2, result.stderr
    for part in [expected] if isinstance(expected, str) else expected:
        assert part in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists(), "a rejected run must write nothing"
    assert [p.name for p in tmp_path.iterdir()] == [], "nor leave its write check behind"


# The same checks as the command's (exit 2 above), run in this process: a second per case.
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loss.alpha=-0.1"], "loss.alpha=-0.1 must be a number in [0, 1]"),
        (["loss.temperature=0"], "loss.temperature=0 must be a number > 0"),
        (["loss.temperature=-2"], "loss.temperature=-2 must be a number > 0"),
        (["teacher.epochs=0"], "teacher.epochs=0 must be a whole number >= 1"),
        (["student.epochs=0"], "student.epochs=0 must be a whole number >= 1"),
        (["teacher.min_top1=97"], "teacher.min_top1=97 must lie in [0, 1]"),
        (["teacher.optimizer.lr=-1"], "teacher.optimizer.lr=-1 must be a number > 0, e.g."),
        (["teacher.optimizer.lr=abc"], "teacher.optimizer.lr='abc' must be a number > 0"),
        (["student.model.width=0"], "student.model.width=0 must be a whole number >= 1"),
    ],
)
def test_bad_values_are_refused_naming_the_key_and_the_range(overrides, expected):
    with pytest.raises(UserError) as refused:
        check_overrides(overrides)
    assert expected in str(refused.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["task=lm", "student=smallcnn"],
            "student=smallcnn reads images, but task=lm and task=instruct train",
        ),
        (["task=lm", "teacher=resnet18"], "teacher=resnet18 reads images, but task=lm"),
        (["task=lm", "dataset=digits"], "dataset=digits reads images, but task=lm"),
        (["dataset=shakespeare"], "or task=lm for text"),
        (["teacher=gpt_tiny"], "teacher=gpt_tiny reads text, but task=classify classifies"),
        (["student=hf", "student.path=/x"], "student=hf reads text, but task=classify"),
        (["task=instruct", "dataset=shakespeare"], "dataset=shakespeare holds no prompts"),
        # text classification: labelled texts, read by text classifiers alone
        (["dataset=reviews"], "teacher=resnet8x4 reads images, but dataset=reviews holds"),
        (["dataset=reviews", "teacher=text_transformer"], "e.g. student=text_transformer_tiny"),
        (["teacher=text_transformer"], "teacher=text_transformer reads labelled texts, but "),
        (
            ["dataset=reviews", "teacher=gpt_small", "student=text_transformer_tiny"],
            "teacher=gpt_small reads text, but task=classify classifies images or labelled",
        ),
        (["task=lm", "dataset=reviews"], "dataset=reviews reads labelled texts, but task=lm"),
    ],
)
def test_models_and_dataset_that_read_another_modality_than_the_task_are_refused(
    overrides, expected
):
    with pytest.raises(UserError, match="pick a") as refused:
        check_overrides(overrides)
    assert expected in str(refused.value)
    if overrides == ["dataset=shakespeare"]:
        check_overrides(["task=lm"])  # GPTs on Shakespeare: all text, accepted


def test_text_classification_is_accepted():
    models = ["teacher=text_transformer", "student=text_transformer_tiny"]
    check_overrides(["dataset=reviews", *models])
    check_overrides(["dataset=text_classify", "dataset.path=x.jsonl", *models])
    check_overrides(["experiment=reviews"])


def test_cuda_without_a_gpu_is_bad_input(kd):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    result = kd("train", "device=cuda")
    assert result.returncode == 2
    assert "device=cuda" in result.stderr


def test_the_device_setting_is_checked_once_for_kd_train_and_kd_eval(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="device=cuda but no CUDA GPU is visible"):
        check_device(OmegaConf.create({"type": "cuda"}))
    with pytest.raises(UserError, match="device.type='tpu' must be auto, cpu or cuda"):
        check_device(OmegaConf.create({"type": "tpu"}))
    assert resolve_device(OmegaConf.create({"type": "auto"})) == torch.device("cpu")


def _save_teacher_checkpoint(path: Path, width: int) -> None:
    from kdcli.models.smallcnn import SmallCNN

    torch.save(SmallCNN(10, 1, 8, width=width).state_dict(), path)


def test_checkpoint_of_another_architecture_is_bad_input(kd, tmp_path):
    _save_teacher_checkpoint(tmp_path / "teacher.pt", width=8)
    result = kd("train", "teacher=resnet18", "teacher.checkpoint=teacher.pt")
    assert result.returncode == 2
    assert "teacher.checkpoint=teacher.pt does not match resnet18" in result.stderr
    # checked by the pipeline as it loads the checkpoint: before anything trains or is cached
    assert not (tmp_path / "outputs" / "cache").exists()
    assert not list(tmp_path.glob("outputs/**/student.pt"))


def test_checkpoint_with_another_class_count_is_bad_input(tmp_path):
    from kdcli.models.smallcnn import SmallCNN

    torch.save(SmallCNN(100, 1, 8, width=8).state_dict(), tmp_path / "t.pt")
    with pytest.raises(UserError, match=r"fc.weight is \[100, 16\] in the file but \[10, 16\]"):
        load_model(SmallCNN(10, 1, 8, width=8), tmp_path / "t.pt", "teacher.checkpoint", "x")


def test_unreadable_checkpoint_is_bad_input(tmp_path):
    (tmp_path / "t.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="could not be read as a PyTorch checkpoint"):
        read_state_dict(tmp_path / "t.pt", "teacher.checkpoint")


def test_a_sweep_expands_into_one_config_per_point():
    configs = check_overrides(["loss.alpha=0.1,0.5", "seed=0,1"], multirun=True)
    assert sorted((c.loss.alpha, c.seed) for c in configs) == [
        (0.1, 0),
        (0.1, 1),
        (0.5, 0),
        (0.5, 1),
    ]


def test_non_numeric_alpha_is_bad_input():
    with pytest.raises(UserError, match="loss.alpha='abc' must be a number"):
        check_overrides(["loss.alpha=abc"])


def test_a_bad_model_argument_names_the_key():
    with pytest.raises(UserError, match="student.model.width='wide' must be a whole number"):
        check_overrides(["student.model.width=wide"])
    [cfg] = check_overrides(["+student.model.colour=red"])  # a tree check cannot know
    with pytest.raises(UserError, match="student.model could not be built"):
        build_model(cfg, "student", DatasetInfo("d", 10, 1, 8, (0.3,), (0.4,)))


@pytest.mark.parametrize("value", ["-0.1", "1.5", "high"])
def test_min_top1_must_be_a_fraction(value):
    with pytest.raises(UserError, match="teacher.min_top1"):
        check_overrides(["teacher=smallcnn", f"teacher.min_top1={value}"])


def test_min_top1_accepts_a_fraction_or_null():
    for value in ("0", "0.97", "1", "null"):
        check_overrides(["teacher=smallcnn", "student=mlp", f"teacher.min_top1={value}"])


LORA = "student.lora={r:4,target_modules:[qkv,proj]}"


def test_lora_layers_that_the_student_lacks_are_named_with_those_it_has():
    from kdcli.config.objects import check_lora_layers
    from kdcli.models.lm.gpt import GPT

    student = GPT(13, image_size=8, layers=1, heads=2, width=16)
    [cfg] = check_overrides(["task=lm", LORA])
    check_lora_layers(cfg, student)  # both exist
    [cfg] = check_overrides(["task=lm", "student.lora={target_modules:[qkv,atn]}"])
    with pytest.raises(UserError) as caught:
        check_lora_layers(cfg, student)
    assert str(caught.value).startswith(
        "student.lora.target_modules=['atn', 'qkv']: in the student (gpt_tiny), no layer that "
        "LoRA can adapt is named 'atn'."
    )
    assert "The layers it can adapt: positions, qkv, proj, mlp.0, mlp.2" in str(caught.value)


def test_lora_is_refused_with_a_pruning_fine_tune_and_kept_with_int8():
    with pytest.raises(UserError, match="student.lora with a pruning fine-tune"):
        check_overrides(["task=lm", LORA, "compress=prune"])
    check_overrides(["task=lm", LORA, "compress=int8"])
    check_overrides(["task=lm", LORA, "compress=prune", "compress.epochs=0"])
