"""``python -m charrnn_ext`` runs the ``charrnn`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
