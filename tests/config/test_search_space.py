"""A search's space from Hydra's override grammar, and the points its pre-flight checks."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from kdcli.config.search_space import (
    Axis,
    check_points,
    check_validation,
    is_search,
    space_of,
    with_validation,
)
from kdcli.errors import UserError


def space(*lines, params=None):
    return space_of(OverridesParser.create().parse_overrides(list(lines)), params)


def test_each_form_of_the_grammar_gives_its_axis():
    axes = space(
        "loss.alpha=interval(0.1,0.9)",
        "student.optimizer.lr=tag(log,interval(1e-3,1e-1))",
        "student.epochs=int(interval(2,8))",
        "loss.temperature=interval(1,8)",
        "loss=choice(kd,dkd)",
        "seed=0,1,2",
        "student.batch_size=range(32,129,32)",
        "teacher.epochs=3",
    ).axes
    assert axes["loss.alpha"] == Axis("loss.alpha", "float", 0.1, 0.9)
    assert axes["student.optimizer.lr"] == Axis("student.optimizer.lr", "float", 1e-3, 0.1, True)
    assert axes["student.epochs"] == Axis("student.epochs", "int", 2, 8, step=1)
    assert axes["loss"].choices == ("kd", "dkd")
    assert axes["seed"] == Axis("seed", "categorical", choices=(0, 1, 2))
    assert axes["student.batch_size"] == Axis("student.batch_size", "int", 32, 128, step=32)
    assert axes["loss.temperature"] == Axis("loss.temperature", "float", 1.0, 8.0)  # as Hydra
    assert space("loss.temperature=range(1.0,3.0,0.5)").axes["loss.temperature"] == Axis(
        "loss.temperature", "float", 1.0, 2.5, step=0.5
    )
    assert "teacher.epochs" not in axes


def test_an_int_interval_on_a_log_scale_and_the_json_form():
    axis = space("student.epochs=tag(log,int(interval(1,16)))").axes["student.epochs"]
    assert (axis.kind, axis.log, axis.step) == ("int", True, 1)
    assert axis.as_json() == {"kind": "int", "low": 1, "high": 16, "log": True, "step": 1}
    choice = space("loss=kd,dkd").axes["loss"].as_json()
    assert choice == {"kind": "categorical", "choices": ["kd", "dkd"]}


def test_fixed_overrides_and_hydra_keys_are_not_searched():
    found = space("teacher.epochs=3", "hydra.sweeper.n_trials=4", "loss.alpha=interval(0.1,0.5)")
    assert found.fixed == ["teacher.epochs=3"]
    assert list(found.axes) == ["loss.alpha"]


def test_the_command_line_wins_over_params():
    found = space(
        "loss.alpha=interval(0.2,0.3)",
        params={"loss.alpha": "interval(0.1,0.9)", "loss.temperature": "interval(1,4)"},
    )
    assert found.axes["loss.alpha"].low == 0.2
    assert found.axes["loss.temperature"].kind == "float"  # from params


@pytest.mark.parametrize(
    "line, words",
    [
        ("loss.alpha=interval(0.9,0.1)", "lower bound"),
        ("loss.alpha=tag(log,interval(0,1))", "log scale"),
        ("loss=tag(log,choice(kd,dkd))", "log scale"),
        ("loss=shuffle(kd,dkd)", "shuffle"),
        ("seed=range(1,2)", "fewer than two"),
        ("loss=glob(*)", "glob"),
        ("loss=kd,kd", "twice"),
        ("loss.alpha=tag(grid,interval(0.1,0.5))", "tags"),
    ],
)
def test_bad_forms_are_user_errors_naming_the_override(line, words):
    with pytest.raises(UserError, match=words) as error:
        space(line)
    assert line.split("=")[0] in str(error.value)


def test_is_search():
    parse = OverridesParser.create().parse_overrides
    assert is_search(parse(["hydra/sweeper=optuna", "loss.alpha=interval(0,1)"]))
    assert not is_search(parse(["loss.alpha=0.1,0.2"]))


def test_the_search_sets_a_validation_split_unless_given():
    added, was_added = with_validation(space("loss.alpha=interval(0.1,0.5)"), 0.1)
    assert was_added and added.fixed == ["dataset.val_fraction=0.1"]
    given, was_added = with_validation(space("dataset.val_fraction=0.2", "seed=0,1"), 0.1)
    assert not was_added and given.fixed == ["dataset.val_fraction=0.2"]
    with pytest.raises(UserError, match="hydra.sweeper.val_fraction"):
        with_validation(space("seed=0,1"), 0.0)
    with pytest.raises(UserError, match="dataset.val_fraction"):
        check_validation(0.0)
    check_validation(0.1)


def test_the_checked_points_are_each_endpoint_once_not_their_product():
    found = space("teacher.epochs=1", "loss.alpha=interval(0.1,0.9)", "loss=kd,dkd,hard",
                  "student.epochs=range(1,10,4)")  # fmt: skip
    points = check_points(found)
    assert len(points) == 1 + 1 + 2 + 1  # the first point, then one per other value
    assert points[0] == ["teacher.epochs=1", "loss.alpha=0.1", "loss=kd", "student.epochs=1"]
    flat = {line for point in points for line in point}
    assert {"loss.alpha=0.9", "loss=dkd", "loss=hard", "student.epochs=9"} <= flat


def test_the_preflight_points_carry_the_validation_split_the_search_adds():
    from hydra import initialize_config_dir

    from kdcli.config.paths import config_dir
    from kdcli.config.search_space import search_points

    parse = OverridesParser.create().parse_overrides
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        points = search_points(parse(["hydra/sweeper=optuna", "loss.alpha=interval(0.1,0.9)"]))
        with pytest.raises(UserError, match="direction"):
            search_points(parse(["hydra/sweeper=optuna", "hydra.sweeper.direction=minimize",
                                 "loss.alpha=interval(0.1,0.9)"]))  # fmt: skip
    assert points == [
        ["hydra/sweeper=optuna", "dataset.val_fraction=0.1", "loss.alpha=0.1"],
        ["hydra/sweeper=optuna", "dataset.val_fraction=0.1", "loss.alpha=0.9"],
    ]


def test_a_search_with_nothing_to_search_is_refused():
    from kdcli.config.search_space import require_axes

    with pytest.raises(UserError, match="nothing to search"):
        require_axes(space("loss.alpha=0.5"))


def test_a_float_interval_on_a_whole_number_key_is_refused_with_the_int_form():
    from kdcli.config.checks import check_overrides

    with pytest.raises(UserError, match=r"student\.epochs.*int\(interval\(a,b\)\)"):
        check_overrides(["hydra/sweeper=optuna", "student.epochs=interval(2,8)"], multirun=True)
    found = check_overrides(
        ["hydra/sweeper=optuna", "student.epochs=int(interval(2,8))"], multirun=True
    )
    assert {cfg.student.epochs for cfg in found} == {2, 8}
