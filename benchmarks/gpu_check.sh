#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): at most 8 minutes on one GPU, no downloads.
#   bash benchmarks/gpu_check.sh [--out gpu_check.json]    (--reduced: a CPU run in seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 480 python benchmarks/gpu_check.py "$@"
