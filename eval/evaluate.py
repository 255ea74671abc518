"""Batch evaluation of a VideoLISA model on a benchmark.

    python eval/evaluate.py --benchmark reasonvos --data-root data/ReasonVOS \
        --model ZechenBai/VideoLISA-3.8B --out outputs/reasonvos
    torchrun --nproc_per_node 8 eval/evaluate.py ...          # 8 GPUs, videos sharded over ranks
    deepspeed --hostfile hosts eval/evaluate.py ...           # several nodes

Everything lives in :mod:`videolisa.evaluation`; this script only parses arguments.
"""

import sys

from videolisa.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
