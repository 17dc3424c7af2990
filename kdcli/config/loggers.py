"""Pre-flight checks of the `logger` config group: an optional package a logger needs is
installed, logger=mlflow's tracking URI is one MLflow can open and, for a local store, a
place kd can write, and logger=wandb's keys are ones W&B takes. Nothing here imports the
packages themselves (they are slow to import)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

from kdcli.config.writable import _unwritable, check_writable_dir
from kdcli.errors import UserError

# MLflow's own store schemes (a plugin's, registered under the entry point group
# "mlflow.tracking_store", are accepted too)
SERVERS = ("http", "https", "databricks", "databricks-uc", "uc")
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # stores MLflow keeps through SQLAlchemy
EXAMPLE = "sqlite:///outputs/mlflow.db"


def check_logger(cfg: DictConfig) -> None:
    """The chosen logger's package (and for logger=mlflow, its keys)."""
    target = str(cfg.logger.get("_target_", ""))
    if target.endswith("TensorBoardLog") and importlib.util.find_spec("tensorboard") is None:
        raise UserError(
            "logger=tensorboard needs the tensorboard package, which is not installed: "
            "`pip install kdcli[tensorboard]` (or `pip install tensorboard`), or use "
            "logger=jsonl or logger=csv."
        )
    if target.endswith("MlflowLog"):
        check_mlflow(cfg.logger)
    if target.endswith("WandbLog"):
        check_wandb(cfg.logger)


def _check_artifacts(logger: DictConfig) -> None:
    """logger.artifacts (mlflow, wandb): true or false."""
    if not isinstance(logger.get("artifacts", True), bool):
        raise UserError(f"logger.artifacts={logger.get('artifacts')!r} must be true or false.")


def _missing(packages: tuple[str, ...]) -> list[str]:
    return [name for name in packages if importlib.util.find_spec(name) is None]


def check_mlflow(logger: DictConfig) -> None:
    """mlflow is installed (with SQLAlchemy and Alembic for a database store); the keys have
    the right types; the tracking URI's scheme is one MLflow knows, and a local store's file or
    folder can be written."""
    uri = logger.get("tracking_uri")
    if not isinstance(uri, str) or not uri.strip():
        raise UserError(
            f"logger.tracking_uri={uri!r} must be an MLflow tracking URI, e.g. "
            f"logger.tracking_uri={EXAMPLE} or logger.tracking_uri=http://localhost:5000."
        )
    experiment = logger.get("experiment")
    named = isinstance(experiment, str | int) and not isinstance(experiment, bool)
    if experiment is not None and not (named and str(experiment).strip()):
        raise UserError(
            f"logger.experiment={experiment!r} must be a name, or null (the sweep directory's "
            "name for a sweep, 'kd train' for a single run)."
        )
    _check_artifacts(logger)
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter: a path
        scheme = ""
    wanted = ("mlflow", "sqlalchemy", "alembic") if scheme in DATABASES else ("mlflow",)
    missing = _missing(wanted)
    if missing:
        raise UserError(
            f"logger=mlflow needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: `pip install kdcli[mlflow]` "
            "(mlflow-skinny, sqlalchemy, alembic), or use logger=jsonl, csv or tensorboard."
        )
    if scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in ("", "file"):
        path = urlparse(uri).path if scheme == "file" else uri
        check_writable_dir("logger.tracking_uri", path, EXAMPLE)
    elif scheme not in SERVERS + DATABASES and scheme not in _plugin_schemes():
        known = ", ".join(f"{s}://" for s in SERVERS + DATABASES)
        raise UserError(
            f"logger.tracking_uri={uri}: MLflow has no tracking store for {scheme}:// (it knows "
            f"{known} and local folders); e.g. logger.tracking_uri={EXAMPLE}."
        )


WANDB_MODES = ("offline", "online")


def check_wandb(logger: DictConfig) -> None:
    """wandb is installed; the mode is offline or online; the names are text; the folder W&B
    writes in can be written."""
    if _missing(("wandb",)):
        raise UserError(
            "logger=wandb needs the wandb package, which is not installed: `pip install "
            "kdcli[wandb]` (or `pip install wandb`), or use logger=jsonl, csv, tensorboard "
            "or mlflow."
        )
    mode = logger.get("mode")
    if mode not in WANDB_MODES:
        raise UserError(
            f"logger.mode={mode!r} must be offline (the run's files under logger.dir, sent "
            "later by `wandb sync`) or online (needs `wandb login`)."
        )
    for key in ("project", "entity", "group"):
        value = logger.get(key)
        if value is None and key != "project":
            continue  # entity: the login's; group: the sweep directory
        named = isinstance(value, str) and value.strip() != ""
        if not named or (key != "group" and "/" in value):
            raise UserError(
                f"logger.{key}={value!r} must be a name (without '/' in project and entity), "
                f"e.g. logger.{key}=kdcli" + ("." if key == "project" else ", or null.")
            )
    _check_artifacts(logger)
    if mode == "online" and not _wandb_login_found():
        raise UserError(
            "logger.mode=online needs a W&B login, and none was found (WANDB_API_KEY, or "
            "~/.netrc after `wandb login`): run `wandb login` first, or use logger.mode=offline "
            "and `wandb sync outputs/wandb/offline-run-*` later."
        )
    folder = logger.get("dir")
    if not isinstance(folder, str) or not folder.strip():
        raise UserError(f"logger.dir={folder!r} must be a folder, e.g. logger.dir=outputs.")
    check_writable_dir("logger.dir", folder, "outputs")


def _wandb_login_found() -> bool:
    """An API key where W&B looks for one (so that an online run never stops to ask for it
    at a prompt): WANDB_API_KEY, or the netrc entry `wandb login` writes for the host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _check_sqlite(uri: str) -> None:
    """sqlite:///relative/or/absolute.db: a file kd can make or write (MLflow makes the
    folders), not a folder and not an in-memory database (it would vanish with the run)."""
    path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        raise UserError(
            f"logger.tracking_uri={uri}: give the database file, e.g. "
            f"logger.tracking_uri={EXAMPLE} (relative paths start where kd runs)."
        )
    file = Path(path).expanduser()
    if file.is_dir():
        raise UserError(
            f"logger.tracking_uri={uri}: {file} is a folder; name the database file in it, "
            f"e.g. logger.tracking_uri=sqlite:///{file / 'mlflow.db'}."
        )
    problem = _unwritable(file.parent)
    if problem is None and file.exists() and not os.access(file, os.R_OK | os.W_OK):
        problem = f"{file} is not readable and writable"
    if problem is not None:
        raise UserError(
            f"logger.tracking_uri={uri}: kd cannot write that database ({problem}); give a "
            f"file in a folder it can write to, e.g. logger.tracking_uri={EXAMPLE}."
        )


def _plugin_schemes() -> set[str]:
    """Schemes that installed MLflow plugins add (read from package metadata, not imported)."""
    from importlib.metadata import entry_points

    return {entry.name for entry in entry_points(group="mlflow.tracking_store")}
