#!/usr/bin/env bash
# Multi-GPU speed-up of the trainer under torchrun (DistributedDataParallel) on ml-1m-u2999.
#
#   bash benchmarks/bench_ddp.sh [EPOCHS] [CONFIG]
#   EPOCHS=5 CONFIG=ml-1m/hstu-sampled-softmax-n128-final by default; needs 2 CUDA GPUs and data/ml-1m-u2999.
#   On the lent machines: run(kind="nvidia-h200-x2", carry=["data/ml-1m-u2999"],
#     command="PYTHONPATH=. bash benchmarks/bench_ddp.sh 5")
#
# Runs the same config on 1 GPU and on 2 GPUs (torchrun --nproc_per_node=2: every rank trains on its share
# of each epoch's batches, batch 128 per rank, gradients all-reduced; evaluation as the trainer does it under
# DDP), then prints training seconds per epoch (evaluation excluded), the speed-up, and the final test
# metrics of both runs (the 2-GPU run takes optimizer steps of 2 x 128 histories, so its metrics after the
# same number of epochs differ a little). Results: $OUT (or benchmarks/results/ddp) /ddp_<n>gpu/results.json
# and ddp_summary.md.
set -euo pipefail
EPOCHS=${1:-5}
CONFIG=${2:-ml-1m/hstu-sampled-softmax-n128-final}
DATA=${DATA:-data/ml-1m-u2999}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${OUT:-$ROOT/benchmarks/results/ddp}
PY=${PYTHON:-python3}
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -lt 2 ]; then
  echo "bench_ddp.sh: torch sees $NGPU CUDA GPU(s); the 2-GPU run needs 2 (use a 2-GPU machine)" >&2
  exit 2
fi
if [ ! -f "$DATA/ratings.dat" ]; then
  echo "bench_ddp.sh: no $DATA/ratings.dat; put ML-1M (or its users 1-2999) there or set DATA=..." >&2
  exit 2
fi
mkdir -p "$DEST"
COMMON=(--config "$CONFIG" --set "data_dir=$DATA" --set "num_epochs=$EPOCHS" --set tensorboard=false
        --set progress=false --set save_checkpoints=false --set timestamp_run_dir=false
        --set "exp_dir=$DEST")
for N in 1 2; do
  echo "== $N GPU(s): torchrun (python -m torch.distributed.run) --standalone --nproc_per_node=$N -m hstu_tutorial.train ${COMMON[*]} --set name=ddp_${N}gpu"
  $PY -m torch.distributed.run --standalone --nproc_per_node="$N" -m hstu_tutorial.train "${COMMON[@]}" --set "name=ddp_${N}gpu" \
    2>&1 | tee "$DEST/ddp_${N}gpu.log" | grep -v "^\s*$" | tail -n 20
done
$PY - "$DEST" "$EPOCHS" <<'EOF'
import json, sys
from pathlib import Path

dest, epochs = Path(sys.argv[1]), int(sys.argv[2])
found = {n: next(dest.glob(f"**/ddp_{n}gpu/results.json"), None) for n in (1, 2)}
missing = [n for n, p in found.items() if p is None]
if missing:
    sys.exit(f"bench_ddp.sh: no results.json for the {missing}-GPU run under {dest}; see the logs there")
res = {n: json.loads(p.read_text()) for n, p in found.items()}
hist = {n: r["history"] for n, r in res.items()}
# Epoch 0 pays for warm-up (autotuning, graph capture); compare the mean of the later epochs.
train_s = {n: sum(h["train_s"] for h in hs[1:]) / max(1, len(hs) - 1) for n, hs in hist.items()}
lines = [
    f"# DDP speed-up: {res[1]['name']} vs {res[2]['name']}",
    "",
    f"{res[1]['device']}, torch {res[1]['torch']}, {epochs} epochs, data {res[1]['config']['data_dir']}",
    "",
    "| GPUs | train s/epoch (epochs 2+) | speed-up | test HR@10 (final) | test NDCG@10 (final) |",
    "|---|---|---|---|---|",
]
for n in (1, 2):
    t = hist[n][-1]["test"]
    lines.append(f"| {n} | {train_s[n]:.3f} | {train_s[1] / train_s[n]:.2f} | {t['hr@10']:.4f} | {t['ndcg@10']:.4f} |")
text = "\n".join(lines) + "\n"
print(text)
(dest / "ddp_summary.md").write_text(text)
EOF
