"""``python -m viz_server``: the same as the ``viz-server`` command."""

import sys

from viz_server.cli import main

sys.exit(main())
