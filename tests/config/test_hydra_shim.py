"""kdcli/config/hydra_shim.py, the one place that uses Hydra's private API: it still works with
the installed Hydra (its parser and its basic sweeper's split)."""

from hydra.core.override_parser.overrides_parser import OverridesParser

from kdcli.config.hydra_shim import args_parser, split_sweep


def test_hydras_parser_reads_overrides_and_its_flags():
    parsed = args_parser().parse_args(["--multirun", "loss.alpha=0.1,0.9", "seed=1"])
    assert parsed.multirun and parsed.overrides == ["loss.alpha=0.1,0.9", "seed=1"]
    assert not parsed.experimental_rerun and not parsed.shell_completion


def test_a_sweep_splits_into_its_points_in_hydras_order():
    overrides = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y", "c=3"])
    points = split_sweep(overrides)
    assert points == [
        ["a=1", "b=x", "c=3"],
        ["a=1", "b=y", "c=3"],
        ["a=2", "b=x", "c=3"],
        ["a=2", "b=y", "c=3"],
    ]
