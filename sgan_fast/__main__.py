"""`python -m sgan_fast ...`: the sgan-fast command, for launchers that take a module
(torchrun --nproc-per-node N -m sgan_fast train ...)."""

import sys

from .cli import main

sys.exit(main())
