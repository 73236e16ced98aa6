"""``python -m autopeft_service.cli`` == the ``autopeft`` command."""

import sys

from autopeft_service.cli.main import main

sys.exit(main())
