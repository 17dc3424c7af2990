"""Pre-flight checks of the `logger` group (kdcli/config/loggers.py): logger=mlflow without its
packages, or with a tracking URI MLflow cannot open or kd cannot write, stops with exit 2
before anything runs."""

from __future__ import annotations

import importlib.util

import pytest

from kdcli.cli.main import main
from kdcli.config.checks import check_overrides
from kdcli.errors import UserError


def without(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Packages `names` look uninstalled to the checks."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a)
    )


def test_logger_mlflow_without_mlflow_exits_2_before_anything_runs(monkeypatch, tmp_path, capsys):
    without(monkeypatch, "mlflow")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "logger=mlflow"]) == 2
    assert "logger=mlflow needs mlflow" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


def test_a_sqlite_store_also_needs_sqlalchemy_and_alembic(monkeypatch):
    without(monkeypatch, "sqlalchemy", "alembic")
    with pytest.raises(
        UserError, match=r"needs sqlalchemy, alembic, .*pip install kdcli\[mlflow\]"
    ):
        check_overrides(["logger=mlflow"])
    check_overrides(["logger=mlflow", "logger.tracking_uri=http://localhost:5000"])  # a server


def test_logger_tensorboard_without_the_package_is_refused(monkeypatch):
    without(monkeypatch, "tensorboard")
    with pytest.raises(UserError, match=r"logger=tensorboard needs .*kdcli\[tensorboard\]"):
        check_overrides(["logger=tensorboard"])


def test_a_tracking_uri_mlflow_does_not_know_is_refused():
    with pytest.raises(UserError, match=r"logger.tracking_uri=bogus://x: MLflow has no"):
        check_overrides(["logger=mlflow", "logger.tracking_uri=bogus://x"])


@pytest.mark.parametrize("uri", ["sqlite:///{file}/mlflow.db", "sqlite:///{tmp}", "{file}/runs",
                                 "sqlite://", "sqlite:///:memory:"])  # fmt: skip
def test_a_store_kd_cannot_write_is_refused_naming_the_key(tmp_path, uri):
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    uri = uri.format(file=file, tmp=tmp_path)
    with pytest.raises(UserError, match=r"^logger.tracking_uri="):
        check_overrides(["logger=mlflow", f"logger.tracking_uri={uri}"])


@pytest.mark.parametrize(
    "override",
    [
        "logger.experiment=''",
        "logger.experiment=true",
        "logger.artifacts=maybe",
        "logger.tracking_uri=null",
    ],
)
def test_mistyped_keys_are_refused(override):
    with pytest.raises(UserError, match=override.split("=")[0]):
        check_overrides(["logger=mlflow", override])


def test_the_default_store_and_remote_ones_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri in ("sqlite:///outputs/mlflow.db", "https://mlflow.example:5000",
                "postgresql+psycopg2://u@db/mlflow", f"file://{tmp_path}/runs"):  # fmt: skip
        check_overrides(["logger=mlflow", f"logger.tracking_uri={uri}"])
    assert not (tmp_path / "outputs").exists(), "the check leaves nothing behind"


def test_a_bad_tracking_uri_exits_2_from_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "logger=mlflow", "logger.tracking_uri=bogus://x"]) == 2
    err = capsys.readouterr().err
    assert "logger.tracking_uri=bogus://x" in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


def test_logger_wandb_without_wandb_exits_2_before_anything_runs(monkeypatch, tmp_path, capsys):
    without(monkeypatch, "wandb")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "logger=wandb"]) == 2
    assert "logger=wandb needs the wandb package" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "override",
    ["logger.mode=cloud", "logger.project=''", "logger.project=a/b", "logger.entity=a/b",
     "logger.group=''", "logger.artifacts=maybe", "logger.dir=null"],
)  # fmt: skip
def test_logger_wandbs_mistyped_keys_are_refused(monkeypatch, override):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb absent")
    with pytest.raises(UserError, match=override.split("=")[0]):
        check_overrides(["logger=wandb", override])


def test_logger_wandbs_folder_must_be_writable(tmp_path):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb absent")
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    with pytest.raises(UserError, match=r"^logger.dir="):
        check_overrides(["logger=wandb", f"logger.dir={file}"])
    check_overrides(["logger=wandb", "logger.group=outputs/multirun/x"])


def test_logger_wandb_online_needs_a_login_it_can_find(tmp_path, monkeypatch):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb absent")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(UserError, match=r"logger.mode=online needs a W&B login.*wandb login"):
        check_overrides(["logger=wandb", "logger.mode=online"])
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k3y\n")
    (tmp_path / "netrc").chmod(0o600)
    check_overrides(["logger=wandb", "logger.mode=online"])  # as `wandb login` leaves it
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k3y")
    check_overrides(["logger=wandb", "logger.mode=online"])
