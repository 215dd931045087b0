"""`python -m sentistream`: the same command as the `sentistream` console script."""

import sys

from sentistream.cli import main

sys.exit(main())
