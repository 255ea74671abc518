"""Score predicted masks against a benchmark's ground truth: the same as ``videolisa score``.

Example: ``python eval/score.py --benchmark mevis --gt MeViS/valid_u --pred outputs/mevis --workers 8``
"""

import sys

from videolisa.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
