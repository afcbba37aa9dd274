"""``python -m srkit`` (also what ``torchrun -m srkit`` runs)."""

import sys

from srkit.cli import main

sys.exit(main())
