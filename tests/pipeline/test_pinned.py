"""Pins what a refactor must not change: report.json's keys and value types of a tiny run,
and the cache fingerprints (entry names) of its teacher, soft labels and baseline.

A change to these is a change to the on-disk formats: cached entries and old reports
would stop matching. Update the pins only on purpose, and say so in the commit.
"""

from __future__ import annotations

from typing import Any

# key path -> type name, for every leaf of report.json (values that vary by run excluded)
REPORT_SHAPE = {
    "kdcli_version": "str",
    "run_dir": "str",
    "seed": "int",
    "device": "str",
    "processes": "int",
    "metric": "str",
    "metric_label": "str",
    "dataset.name": "str",
    "dataset.num_classes": "int",
    "dataset.channels": "int",
    "dataset.image_size": "int",
    "dataset.mean": "list",
    "dataset.std": "list",
    "dataset.modality": "str",
    # added on purpose: the facts of labelled texts (0, 0 and [] for images), text classification
    "dataset.vocabulary": "int",
    "dataset.padding": "int",
    "dataset.classes": "list",
    "loss.name": "str",
    "loss.alpha": "float",
    "loss.temperature": "float",
    "loss.schedule.alpha": "NoneType",
    "loss.schedule.temperature": "NoneType",
    "soft_labels.mode": "str",
    "soft_labels.features": "str",
    "soft_labels.layers": "list",
    "soft_labels.reused": "bool",
    "soft_labels.path": "str",
    "soft_labels.bytes": "int",
    "soft_labels.dtype": "str",
    "soft_labels.topk": "NoneType",
    "compression.params": "float",
    "compression.flops": "float",
    "compression.latency_speedup": "float",
    "kd_gain": "float",
    "kd_gain_ci": "list",
    "kd_gain_p": "float",
    "kd_gain_images.student_only": "int",
    "kd_gain_images.baseline_only": "int",
    "kd_gain_images.total": "int",
    "warnings": "list",
    "metrics": "str",
    "plots": "list",
    **{
        f"stages.{stage}.{key}": kind
        for stage in ("teacher", "soft_labels", "distill", "baseline", "evaluate")
        for key, kind in (
            ("seconds", "float"),
            ("images_per_s", "float"),
            ("reused", "bool"),
            ("precision", "str"),
            ("resumed_from", "NoneType"),  # "epoch E, batch B" when a saved state was resumed
        )
    },
    "stages.evaluate.images_per_s": "NoneType",
    "stages.evaluate.precision": "NoneType",
    **{
        f"{role}.{key}": kind
        for role in ("teacher", "student", "baseline")
        for key, kind in (
            ("name", "str"),
            ("top1", "float"),
            ("nll", "float"),
            ("ece", "float"),
            ("params", "int"),
            ("flops", "int"),
            ("latency_ms", "float"),
            ("checkpoint_bytes", "int"),
            ("checkpoint", "str"),
            ("source", "str"),
            ("reused", "bool"),
            ("precision", "str"),
            # added on purpose: whether its evaluation was read from the cache, and its time
            ("evaluation_reused", "bool"),
            ("evaluation_seconds", "float"),
        )
    },
    "student.agreement": "float",
    "baseline.agreement": "float",
    "student.teacher_kl": "float",  # added on purpose: KL(teacher || model) on the test split
    "baseline.teacher_kl": "float",
}

# The cache entries of the tiny run: <kind>/<name>-<fingerprint>. Changed on purpose six
# times: teachers train with warm-up then cosine by default (new teacher key), soft labels are
# stored shifted by their row maximum (soft-label format 2 in the key), every key became
# named settings, all always present (kdcli/pipeline/keys.py, KEY_VERSION 2), the
# student's batches per optimizer step and LoRA settings entered the baseline's key, the
# teacher's own tokenizer (`teacher.tokenizer`, null here) entered every trained key, and
# the teacher's and baseline's evaluations are stored (`evaluations/`, checked by name).
CACHE_ENTRIES = [
    "baselines/mlp-1c51c172d8fb1cce",
    "soft_labels/smallcnn-311ff20a797a7a05",
    "teachers/smallcnn-8bc75fe24a604b52",
]


def leaves(node: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        found: dict[str, str] = {}
        for key, value in node.items():
            found.update(leaves(value, f"{prefix}{key}."))
        return found
    return {prefix.rstrip("."): type(node).__name__}


def test_report_keys_and_cache_fingerprints_stay_the_same(kd, tiny, tmp_path):
    result = kd("train", *tiny)
    assert result.returncode == 0, result.stderr
    report = result.report()
    assert leaves(report) == REPORT_SHAPE
    assert (report["teacher"]["params"], report["student"]["params"]) == (4370, 2410)
    assert (report["teacher"]["flops"], report["student"]["flops"]) == (193856, 4736)
    cache = tmp_path / "outputs" / "cache"
    entries = sorted(
        str(p.relative_to(cache)) for p in cache.glob("*/*") if (p / "manifest.json").is_file()
    )
    evaluations = [e.rsplit("-", 1)[0] for e in entries if e.startswith("evaluations/")]
    assert evaluations == ["evaluations/mlp", "evaluations/smallcnn"]  # keyed by the machine too
    assert [e for e in entries if not e.startswith("evaluations/")] == CACHE_ENTRIES
