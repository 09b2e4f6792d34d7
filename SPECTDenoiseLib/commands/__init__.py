"""Sub-commands of the ``spectdenoise`` CLI, one module each (see :mod:`SPECTDenoiseLib.cli`)."""
