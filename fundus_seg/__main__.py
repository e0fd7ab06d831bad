import sys

from fundus_seg.cli import main

sys.exit(main())
