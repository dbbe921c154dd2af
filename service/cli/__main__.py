"""`python -m service.cli ...` is the `rankloop` command."""

import sys

from service.cli.main import main

sys.exit(main())
