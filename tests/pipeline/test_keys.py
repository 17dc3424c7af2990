"""Cache keys (kdcli/pipeline/keys.py): for each artifact, which settings change its key and
which do not. A row names one change (a command-line override, or a fact the run decides:
a model's precision, the soft-label mode, tapped layers) and the keys it must change; every
other key must stay. Keys are computed in process, on configs composed by Hydra."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from kdcli.config.paths import config_dir
from kdcli.engine.precision import FP32, Precision
from kdcli.pipeline import keys

BF16 = Precision("bf16", channels_last=True)
ARTIFACTS = ("teacher", "baseline", "checkpoint", "soft_labels", "student")
TRAINED = {"teacher", "baseline", "soft_labels", "student"}  # all but a loaded teacher's
WITH_TEACHER = {"teacher", "soft_labels", "student"}  # what a trained teacher's key reaches
WITH_STUDENT = {"baseline", "student"}
IMAGEFOLDER = ["dataset=imagefolder", "dataset.root=/data"]  # a base for dataset file rows
LORA = "student.lora={target_modules:[qkv]}"  # a base for LoRA rows


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the run decides beside the config."""

    mode: str = "views"  # the resolved soft-label mode
    teacher_precision: Precision = FP32
    student_precision: Precision = FP32
    layers: tuple[str, ...] = ()
    from_checkpoint: bool = False  # the teacher is loaded: no trained teacher is keyed


LOADED = Facts(from_checkpoint=True)
GENERATE = Facts(mode="generate")
# (the change: an override, or other facts; the facts both sides share; the keys it changes;
# optionally, overrides both sides share)
ROWS = [
    # seeds: everything trained; the views the student draws
    ("seed=1", Facts(), TRAINED),
    ("seed=1", dataclasses.replace(LOADED, mode="static"), WITH_STUDENT),
    ("seed=1", LOADED, {"soft_labels", *WITH_STUDENT}),
    ("seed=1", dataclasses.replace(LOADED, mode="generate"), {"soft_labels", *WITH_STUDENT}),
    # dataset values and augmentation: everything trained on the data; by path for files
    ("dataset.augment=false", Facts(), TRAINED),
    ("dataset.max_shift=2", Facts(), TRAINED),
    ("dataset.test_fraction=0.3", Facts(), TRAINED),
    ("dataset.val_fraction=0.1", Facts(), TRAINED),
    ("dataset=mnist", Facts(), TRAINED),
    ("dataset.root=/data/other", Facts(), TRAINED, IMAGEFOLDER),
    ("dataset.workers=2", Facts(), TRAINED, IMAGEFOLDER),  # every dataset.* setting counts
    # the teacher's settings: its key, and what learns from it; never the baseline's
    ("teacher.epochs=3", Facts(), WITH_TEACHER),
    ("teacher.batch_size=32", Facts(), WITH_TEACHER),
    ("teacher.optimizer.lr=0.05", Facts(), WITH_TEACHER),
    ("teacher.scheduler.warmup_epochs=1", Facts(), WITH_TEACHER),
    ("teacher.clip_grad_norm=1.0", Facts(), WITH_TEACHER),
    ("teacher.epochs=3", LOADED, set()),
    ("teacher=resnet8", Facts(), {"checkpoint", *WITH_TEACHER}),
    ("teacher.model.widths=[16,32,64,128]", Facts(), {"checkpoint", *WITH_TEACHER}),
    ("teacher.min_top1=0.9", Facts(), set()),
    # the teacher's own tokenizer (two tokenizers: every text window is cut by characters,
    # the student's too); the student's own, spelled out for the teacher, is no change
    ("teacher.tokenizer=chars", Facts(), TRAINED, ["task=lm", "dataset.tokenizer=/tok"]),
    ("teacher.tokenizer=chars", LOADED, {"soft_labels", *WITH_STUDENT},
     ["task=lm", "dataset.tokenizer=/tok"]),
    ("teacher.tokenizer=chars", Facts(), set(), ["task=lm"]),
    ("teacher.tokenizer=/tok", Facts(), set(), ["task=lm", "dataset.tokenizer=/tok"]),
    # the teacher's weights: a loaded teacher by the file's contents, not its path
    ("teacher.checkpoint=<other>", Facts(), {"checkpoint"}),
    ("teacher.checkpoint=<other>", LOADED, {"checkpoint", "soft_labels", "student"}),
    ("teacher.checkpoint=<copy>", LOADED, set()),
    # the student's settings: baseline and student; soft labels only for the views it draws
    ("student.epochs=3", Facts(), {"soft_labels", *WITH_STUDENT}),
    ("student.epochs=3", Facts(mode="static"), WITH_STUDENT),
    ("student.batch_size=32", Facts(), {"soft_labels", *WITH_STUDENT}),
    ("student.batch_size=32", Facts(mode="static"), WITH_STUDENT),
    ("student.optimizer.lr=0.05", Facts(), WITH_STUDENT),
    ("student.scheduler=constant", Facts(), WITH_STUDENT),
    ("student.clip_grad_norm=1.0", Facts(), WITH_STUDENT),
    ("student=mlp", Facts(), WITH_STUDENT),
    ("student.model.width=8", Facts(), WITH_STUDENT),
    # how the student trains, which the baseline shares (trained the same way, the KD gain
    # compares like with like); accumulating draws the same views
    ("student.accumulate=2", Facts(), WITH_STUDENT),
    ("student.accumulate=2", Facts(mode="static"), WITH_STUDENT),
    ("student.lora={target_modules:[qkv]}", Facts(), WITH_STUDENT, ["task=lm"]),
    ("+student.lora.r=4", Facts(), WITH_STUDENT, ["task=lm", LORA]),
    ("+student.lora.alpha=8", Facts(), WITH_STUDENT, ["task=lm", LORA]),
    ("+student.lora.dropout=0.1", Facts(), WITH_STUDENT, ["task=lm", LORA]),
    ("student.lora.target_modules=[qkv,proj]", Facts(), WITH_STUDENT, ["task=lm", LORA]),
    # the defaults spelled out, the names in another order: the same adapters, the same keys
    ("+student.lora.r=8", Facts(), set(), ["task=lm", LORA]),
    ("+student.lora.alpha=16", Facts(), set(), ["task=lm", LORA]),
    ("student.lora.target_modules=[proj,qkv]", Facts(), set(),
     ["task=lm", "student.lora={target_modules:[qkv,proj]}"]),
    # loss settings: the student alone (a loss sweep shares teacher, soft labels, baseline)
    ("loss.alpha=0.5", Facts(), {"student"}),
    ("loss.temperature=2", Facts(), {"student"}),
    ("loss=dkd", Facts(), {"student"}),
    ("loss.lmbda=0.5", Facts(), {"student"}, ["task=lm"]),
    ("loss.schedule.lmbda={kind:linear,start:0,end:0.5}", Facts(), {"student"}, ["task=lm"]),
    # soft-label settings: the stored labels as stored; the student sees them all
    ("soft_labels.topk=3", Facts(), {"soft_labels", "student"}),
    ("soft_labels.topk=10", Facts(), {"student"}),  # every digit class: all the logits
    ("soft_labels.dtype=float32", Facts(), {"soft_labels", "student"}),
    # (these three reach the soft labels through the mode they decide: a fact, below)
    ("soft_labels.max_gb=1", Facts(), {"student"}),
    ("soft_labels.mode=static", Facts(), {"student"}),
    ("soft_labels.features=online", Facts(), {"student"}),
    ("soft_labels.generate.temperature=0.5", Facts(), {"student"}),
    ("soft_labels.generate.temperature=0.5", GENERATE, {"soft_labels", "student"}),
    ("soft_labels.generate.prompt_fraction=0.2", GENERATE, {"soft_labels", "student"}),
    # what the run decides: precision of each model, the mode, tapped layers
    (Facts(teacher_precision=BF16), Facts(), WITH_TEACHER),
    (Facts(teacher_precision=BF16, from_checkpoint=True), LOADED, {"soft_labels"}),
    (Facts(student_precision=BF16), Facts(), WITH_STUDENT),
    (Facts(mode="static"), Facts(), {"soft_labels"}),
    (GENERATE, Facts(), {"soft_labels"}),
    (Facts(layers=("layer2",)), Facts(), {"soft_labels"}),
    # settings that change no artifact
    ("precision=bf16", Facts(), set()),  # the precision each model resolves to counts (above)
    ("baseline=false", Facts(), set()),
    ("eval.batch_size=64", Facts(), set()),
    ("device=cpu", Facts(), set()),
    ("cache_dir=/elsewhere", Facts(), set()),
    ("checkpoint.save=false", Facts(), set()),
    ("checkpoint.every_s=10", Facts(), set()),
    ("compile=true", Facts(), set()),
    # FSDP takes DDP's steps; a state saved by the other strategy is not resumed (a warning)
    ("distributed.strategy=fsdp", Facts(), set()),
    ("plots=false", Facts(), set()),
    ("logger=csv", Facts(), set()),
    ("compress=int8", Facts(), set()),
]  # fmt: skip


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, str]:
    """Teacher checkpoint files: the base one, one with other contents, a copy of the base."""
    folder = tmp_path_factory.mktemp("weights")
    files = {"base": b"weights", "other": b"other weights", "copy": b"weights"}
    for name, contents in files.items():
        (folder / f"{name}.pt").write_bytes(contents)
    return {name: str(folder / f"{name}.pt") for name in files}


_composed: dict[tuple[str, ...], DictConfig] = {}


def composed(overrides: list[str], weights: dict[str, str]) -> DictConfig:
    """`kd train`'s config for `overrides`, with the base teacher checkpoint."""
    point = ("teacher.checkpoint=<base>", *overrides)
    for name, path in weights.items():
        point = tuple(o.replace(f"<{name}>", path) for o in point)
    if point not in _composed:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            _composed[point] = compose("train", overrides=list(point))
    return _composed[point]


def keys_of(cfg: DictConfig, facts: Facts) -> dict[str, str | None]:
    loaded = keys.checkpoint_key(cfg)
    trained = None if facts.from_checkpoint else keys.teacher_key(cfg, facts.teacher_precision)
    teacher = trained or loaded
    return {
        "teacher": trained,
        "baseline": keys.baseline_key(cfg, facts.student_precision),
        "checkpoint": loaded,
        "soft_labels": keys.soft_labels_key(
            cfg,
            teacher=teacher,
            mode=facts.mode,
            num_classes=10,
            precision=facts.teacher_precision,
            layers=facts.layers,
        ),
        "student": keys.student_key(cfg, teacher=teacher, precision=facts.student_precision),
    }


def shown(facts: Facts) -> str:
    """The facts that differ from the defaults, e.g. "mode=static"."""
    fields = dataclasses.fields(Facts)
    return ",".join(
        f"{f.name}={getattr(facts, f.name)}" for f in fields if getattr(facts, f.name) != f.default
    ).replace("Precision(name='bf16', channels_last=True)", "bf16")


def row_id(row: tuple) -> str:
    change, facts = row[0], row[1]
    name = change if isinstance(change, str) else shown(change)
    return f"{name} [{shown(facts)}]" if facts != Facts() else name


@pytest.mark.parametrize("row", ROWS, ids=[row_id(row) for row in ROWS])
def test_a_setting_changes_exactly_the_keys_that_depend_on_it(row, weights):
    change, facts, expected, *base = row
    base = base[0] if base else []
    before = keys_of(composed(base, weights), facts)
    if isinstance(change, str):
        after = keys_of(composed([*base, change], weights), facts)
    else:
        after = keys_of(composed(base, weights), change)
    changed = {artifact for artifact in ARTIFACTS if before[artifact] != after[artifact]}
    assert changed == expected, f"changed: {sorted(changed)}, expected: {sorted(expected)}"


def test_every_key_holds_the_key_version(weights, monkeypatch):
    cfg = composed([], weights)
    before = keys_of(cfg, Facts())
    monkeypatch.setattr(keys, "KEY_VERSION", keys.KEY_VERSION + 1)
    after = keys_of(cfg, Facts())
    assert all(before[artifact] != after[artifact] for artifact in ARTIFACTS)


def test_equal_settings_give_equal_keys_of_sixteen_hex_digits(weights):
    """Configs composed apart, with the same settings, name the same entries."""
    first = keys_of(composed([], weights), Facts())
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        again = compose("train", overrides=[f"teacher.checkpoint={weights['copy']}"])
    assert keys_of(again, Facts()) == first
    assert all(len(key) == 16 and set(key) <= set("0123456789abcdef") for key in first.values())


# the stored evaluation of a cached teacher (kdcli/pipeline/stored_eval.py): (a change, whether
# it changes the key); what the evaluation splits hold, and how the figures are measured
EVALUATION_ROWS = [
    ("dataset.val_fraction=0.1", True),
    ("dataset.split_seed=1", True),
    ("dataset.test_fraction=0.3", True),
    ("dataset=mnist", True),
    ("eval.latency_runs=5", True),
    ("eval.batch_size=64", True),
    ("task=lm", True),
    ("teacher.epochs=3", True),  # through the teacher's own key
    ("loss.alpha=0.5", False),  # a sweep over the loss reads one stored evaluation
    ("student.epochs=3", False),
    ("teacher.min_top1=0.9", False),
    ("plots=false", False),
    ("cache_dir=/elsewhere", False),
]
MEASURED = {"weights": "abc", "device": "cpu", "machine": "x86_64, 2 cpus, 1 threads"}


def evaluation_key(cfg: DictConfig, **changed: str) -> str:
    model = keys.teacher_key(cfg, FP32)
    return keys.evaluation_key(cfg, model=model, **{**MEASURED, **changed})


@pytest.mark.parametrize("change, changes", EVALUATION_ROWS, ids=[r[0] for r in EVALUATION_ROWS])
def test_the_stored_evaluation_is_keyed_by_its_splits_and_measurements(change, changes, weights):
    before = evaluation_key(composed([], weights))
    assert (evaluation_key(composed([change], weights)) != before) == changes


@pytest.mark.parametrize("fact", ["weights", "device", "machine"])
def test_the_stored_evaluation_is_keyed_by_the_weights_device_and_machine(fact, weights):
    cfg = composed([], weights)
    assert evaluation_key(cfg, **{fact: "another"}) != evaluation_key(cfg)
