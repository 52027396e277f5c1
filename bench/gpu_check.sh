#!/usr/bin/env bash
# One-shot GPU check (issue #15): every page's CLI on the demo models and the real model in bf16 and fp32, the
# identities at dtype tolerances, device_map="auto" with several GPUs, the lens benchmark on the GPU; one row per
# check as it finishes and a summary table at the end. Stopped early (Ctrl-C, or this script's 8-minute limit),
# it prints the partial summary. Usage: bench/gpu_check.sh [--budget SECONDS] [--models a,b] [--commands lens,ood]
set -u
cd "$(dirname "$0")/.."
PY="${PY:-$(make -s venv-path 2>/dev/null)/bin/python}"
[ -x "$PY" ] || PY=python3
exec timeout -s TERM -k 20 "${GPU_CHECK_LIMIT:-470}" "$PY" -m bench.gpu_check "$@"
