"""``python -m efficientcellseg`` entry point."""

import sys

from efficientcellseg.cli import main

sys.exit(main())
