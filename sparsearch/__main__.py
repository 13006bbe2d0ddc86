"""``python -m sparsearch`` runs the CLI."""

import sys

from sparsearch.cli import main

sys.exit(main())
