import sys

from diarization.cli.main import main

sys.exit(main())
