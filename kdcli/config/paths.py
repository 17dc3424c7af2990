"""Where kdcli finds its configs, in a source checkout and in an installed wheel."""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    """The configs directory: `kdcli/configs` in a wheel, `<repo>/configs` in a checkout."""
    for candidate in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"kdcli configs not found next to {_PACKAGE_DIR}; reinstall kdcli")
