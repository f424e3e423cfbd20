"""`python -m kdistill.cli`: the `kdistill` command."""

import sys

from kdistill.cli import main

sys.exit(main())
