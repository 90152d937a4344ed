"""``python -m monai_cluscam``: the command line."""

from __future__ import annotations

import sys

from monai_cluscam.cli import main

sys.exit(main())
