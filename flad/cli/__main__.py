"""`python -m flad.cli`: the `flad` command without its installed script."""

import sys

from flad.cli import main

sys.exit(main())
