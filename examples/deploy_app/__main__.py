"""``python examples/deploy_app -i <DICOM folder> -o <output folder> -m <bundle folder>``: runs ``app.py``."""

import sys

from app import main

if __name__ == "__main__":
    sys.exit(main())
