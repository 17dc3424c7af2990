"""The `kd` command: argv in, exit code out. Nothing imports this package."""

from kdcli.cli.main import main

__all__ = ["main"]
