"""``python -m thalamus_bidsapp``."""

import sys

from thalamus_bidsapp.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
