"""`python -m pixelgen_diffusers.cli ...` (what `accelerate launch -m` and torchrun run) is `pixelgen ...`."""

import sys

from . import main


sys.exit(main())
