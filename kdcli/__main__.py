"""`python -m kdcli ...` is the same as `kd ...`."""

import sys

from kdcli.cli import main

sys.exit(main())
