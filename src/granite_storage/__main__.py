"""``python -m granite_storage``: the ``granite-storage`` command."""

import sys

from granite_storage.cli import main

if __name__ == "__main__":
    sys.exit(main())
