import sys

from kern_tasks.cli import main

sys.exit(main())
