import sys

from postback_hub.cli import main

sys.exit(main())
