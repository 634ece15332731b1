import sys

from diarization.cli import main

sys.exit(main())
