"""``python -m dataaudit`` runs the CLI."""

import sys

from dataaudit.cli import main

sys.exit(main())
