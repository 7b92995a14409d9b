"""`python -m alignkit.cli` (and `accelerate launch -m alignkit.cli`): the command line."""

import sys

from alignkit.cli import main

sys.exit(main())
