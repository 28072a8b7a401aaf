"""``python -m evaluation`` does the same as ``python -m evaluation.seg``."""

import sys

from .seg import main

sys.exit(main())
