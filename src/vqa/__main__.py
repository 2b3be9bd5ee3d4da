"""`python -m vqa ...` is the same as the `vqa` console script."""

import sys

from vqa.cli import main

sys.exit(main())
