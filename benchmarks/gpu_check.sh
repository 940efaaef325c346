#!/usr/bin/env bash
# One short GPU check (under 8 minutes on one GPU): SD v1.4-architecture step benchmarks on CUDA and the paper
# preset's smoke run on CUDA, written to reports/benchmarks-gpu.md. Run from the repository root on a GPU node:
#     bash benchmarks/gpu_check.sh [PROMPT_CSVS]
# PROMPT_CSVS: the folder of i2p_4703.csv, coco_30k.csv, imagenette_prompts.csv (default ../shared/data).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA_DIR="${1:-../shared/data}"
WORK="$(mktemp -d)"
OUT=reports/benchmarks-gpu.md
python - <<'PY'
import torch
assert torch.cuda.is_available(), "benchmarks/gpu_check.sh needs a CUDA device"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
SECONDS=0
timeout 240 python benchmarks/erasure_steps.py --world sd14-arch --device cuda --methods esd-x ac uce ant \
    --iterations 12 --repeats 3 > "$WORK/steps.log" 2>&1 || echo "step benchmark stopped (see $WORK/steps.log)"
steps_s=$SECONDS
SECONDS=0
python - "$WORK" "$DATA_DIR" <<'PY'
import json, subprocess, sys
from pathlib import Path
from unlearnkit.worlds.smoke import reproduce_command, write_smoke_world
work, data = Path(sys.argv[1]), sys.argv[2]
paths = write_smoke_world(work / "smoke")
command = reproduce_command(paths, data)
command[command.index("--device") + 1] = "cuda"
subprocess.run(command + ["--output-dir", str(work / "reports")], check=True, timeout=300)
PY
smoke_s=$SECONDS
{
  echo "# GPU check ($(python -c 'import torch; print(torch.cuda.get_device_name(0))'), $(date -u +%Y-%m-%d))"
  echo
  echo "Written by \`benchmarks/gpu_check.sh\` at git $(git rev-parse --short HEAD)."
  echo
  echo "- SD v1.4-architecture step benchmarks (esd-x, ac, uce, ant; 12 steps x 3 repeats): ${steps_s} s"
  echo "- paper preset, smoke scale, on CUDA (all five notebooks): ${smoke_s} s"
  echo
  echo '```'
  tail -n 40 "$WORK/steps.log"
  echo '```'
} > "$OUT"
echo "wrote $OUT"
