"""``python -m SPECTDenoiseLib`` runs the ``spectdenoise`` command line."""

import sys

from .cli import main

sys.exit(main())
