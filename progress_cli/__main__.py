import sys

from progress_cli.main import main

sys.exit(main())
