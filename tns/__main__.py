"""`python -m tns ...`: the `tns` command, for callers that run it with a given interpreter."""

import sys

from tns.main import main

sys.exit(main())
