"""``python -m idstitch.cli ...``: the ``idstitch`` command, where its script is not on PATH."""

import sys

from idstitch.cli import main

sys.exit(main())
