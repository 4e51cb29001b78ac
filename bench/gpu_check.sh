#!/usr/bin/env bash
# The GPU check: a small store's whole pipeline and `predict` on CUDA (on the CPU where there is no GPU), then the
# figures a user asks for: where the time goes, ConDi against Dense end to end, the GPU's memory. At most ~8 minutes
# on one GPU at the default size; VIDEOS, EPOCHS and DEVICE override it (CI-sized: VIDEOS=20 EPOCHS=1).
#
#   bash bench/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
VIDEOS=${VIDEOS:-300}
EPOCHS=${EPOCHS:-4}
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CLI="$PY -m condi_pipe.cli"
echo "gpu_check: device $DEVICE, $VIDEOS videos, $EPOCHS epochs, in $OUT"
$PY - <<PYEOF
import torch
print("torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PYEOF
cat > "$OUT/run.toml" <<TOML
store = "store"
[extract]
source = "ucf101"
root = "data"
workers = 2
[teacher]
name = "resnet10_3d_motion"
weights = "pretrained"
device = "$DEVICE"
workers = 1
[distill]
student = "resnet10_3d_motion_skim"
losses = ["condi-sr"]
epochs = $EPOCHS
batch_size = 32
lr = 0.1
val_fraction = 0.2
device = "$DEVICE"
[time_models]
repeats = 3
[report]
tables = ["3"]
k = [1, 3, 5]
out_dir = "reports"
TOML
start=$(date +%s)
$CLI synth --out "$OUT/data" --videos "$VIDEOS" --seed 11 --length-profile ucf101 --train-share 0.5
$CLI run --config "$OUT/run.toml" --quiet
echo "gpu_check: pipeline in $(( $(date +%s) - start )) s"
$CLI status --store "$OUT/store"
$CLI bundle --store "$OUT/store" --out "$OUT/bundle" --k 5
start=$(date +%s)
$CLI predict --model "$OUT/bundle" --root "$OUT/data" --out "$OUT/predictions" --device "$DEVICE" --quiet
echo "gpu_check: predict over every generated video in $(( $(date +%s) - start )) s"
$PY bench/predict.py --store "$OUT/store" --student condi-sr-resnet10_3d_motion_skim --videos 30 --rounds 1 \
    --device "$DEVICE" --no-record
$PY - "$OUT/predictions" <<'PYEOF'
import sys
import pyarrow.parquet as pq
steps = pq.read_table(f"{sys.argv[1]}/step_seconds.parquet").to_pandas()
print("gpu_check: ms per video by step:", {c: round(1000 * float(steps[c].mean()), 1) for c in steps if c.endswith("_s")})
print("gpu_check: failures:", pq.read_table(f"{sys.argv[1]}/failures.parquet").num_rows)
PYEOF
if [ "$DEVICE" != "cpu" ]; then
  nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true
fi
