"""`kd list`: groups and options, and for model groups `--details` and `--layers`."""

from __future__ import annotations

import json

import pytest
from bad_files import write_small_imagefolder

from kdcli.cli import listing
from kdcli.errors import UserError


def test_details_json_lists_name_params_flops(kd):
    done = kd(
        "list", "student", "--details", "--json", "resnet8", "wrn_16_1", "eval.latency_runs=2"
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [row["name"] for row in rows] == ["resnet8", "wrn_16_1"]
    for row in rows:
        assert row["params"] > 0 and row["flops"] > 0 and row["latency_ms"] > 0
        assert row["input"] == [1, 8, 8]  # digits, the default dataset
    assert rows[0]["params"] < rows[1]["params"]


def test_details_table(capsys):
    assert listing.main(["teacher", "--details", "smallcnn", "mlp", "eval.latency_runs=2"]) == 0
    out = capsys.readouterr().out
    assert "smallcnn" in out and "FLOPs" in out


def test_layers_show_paths_and_shapes_at_dataset_size():
    rows = listing.model_layers("teacher", "resnet32x4", [])
    shapes = {row["path"]: row["shape"] for row in rows}
    assert shapes["layer1"] == [1, 64, 8, 8]
    assert shapes["layer3"] == [1, 256, 2, 2]
    assert shapes["fc"] == [1, 10]


def test_layers_as_json(capsys):
    assert listing.main(["teacher", "--layers", "wrn_16_2", "--json"]) == 0
    paths = [row["path"] for row in json.loads(capsys.readouterr().out)]
    assert "layer3" in paths and "layer2.0.conv1" in paths


def test_experiments_are_listed_with_descriptions(capsys):
    assert listing.main(["experiment"]) == 0
    out = capsys.readouterr().out
    assert "cifar100_wrn_40_2_wrn_16_2" in out
    assert "@package" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["teacher", "--details", "resnet9"], "no model resnet9"),
        (["loss", "--details"], "measure models"),
        (["teacher", "--layers", "resnet8", "dataset=digitz"], "Did you mean digits"),
        (["teacher", "resnet8"], "go with --details"),
        (["teacher", "--layers", "torchvision"], "teacher.name"),
        (["teacher", "--layers", "mlp", "dataset.root=[v2]x"], "could not parse the overrides"),
    ],
)
def test_bad_requests(argv, message):
    with pytest.raises(UserError, match=message):
        listing.main(argv)


def test_bad_request_exits_2(kd):
    done = kd("list", "teacher", "--details", "resnet9")
    assert done.returncode == 2 and "no model resnet9" in done.stderr


def test_names_and_descriptions_print_as_written_not_as_markup(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "300")  # one line per row
    assert listing.main(["model"]) == 0
    assert "(task=lm, kdcli[hf])" in capsys.readouterr().out  # rich markup ate "[hf]"
    root = tmp_path / "[v2]"  # an ImageFolder is named after its folder
    write_small_imagefolder(root)
    argv = ["teacher", "--details", "mlp", "dataset=imagefolder", f"dataset.root='{root}'"]
    assert listing.main([*argv, "dataset.test_fraction=0.5", "eval.latency_runs=1"]) == 0
    assert "models at [v2] size" in capsys.readouterr().out
