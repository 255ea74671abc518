#!/usr/bin/env bash
# GPU benchmarks of videolisa at the release shapes in bf16, on one CUDA device (about 5 minutes on an H100;
# add --compile to also torch.compile the SAM encoder, a few minutes more). Prints the device and date, the
# tables of gpu_bench.py (SAM ViT-B/ViT-H encoder stock vs fast, CLIP + LLM pass latency, end-to-end seconds
# for a 100-frame 480p video) and of pipeline.py --device cuda (videolisa infer on 60/600 frames, segment_many),
# then one combined RATIO line. Record the results with the date and device in eval/perf/RESULTS.md.
#
# Usage: eval/perf/gpu.sh [--compile]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh needs a CUDA device')"
date -u '+%Y-%m-%d %H:%M UTC'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
python3 eval/perf/gpu_bench.py "$@" | tee "$logs/gpu_bench.txt"
python3 eval/perf/pipeline.py --device cuda | tee "$logs/pipeline.txt"
ratios() { grep '^RATIO ' "$1" | tail -n 1 | cut -d' ' -f2-; }
echo "RATIO $(ratios "$logs/gpu_bench.txt") $(ratios "$logs/pipeline.txt")"
