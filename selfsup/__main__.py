"""``python -m selfsup`` runs the command line."""
import sys

from selfsup.cli import main

sys.exit(main())
