#!/usr/bin/env bash
# Multi-GPU speed-up of the trainer under torchrun (DistributedDataParallel) on ml-1m-u2999.
#
#   bash benchmarks/bench_ddp.sh [EPOCHS] [CONFIG]
#   EPOCHS=5 CONFIG=ml-1m/hstu-sampled-softmax-n128-final by default; needs 2 CUDA GPUs and data/ml-1m-u2999.
#
# Runs the same config on 1 GPU (the trainer's default, with its CUDA graph, and eager) and on 2 GPUs
# (torchrun --nproc_per_node=2: every rank trains on its share of each epoch's batches, batch 128 per rank,
# gradients all-reduced, evaluation on rank 0), then prints training seconds per epoch (evaluation
# excluded), the speed-ups and the final test metrics (the 2-GPU run takes optimizer steps of 2 x 128
# histories, so its metrics after the same number of epochs differ a little). Results: $OUT (or
# benchmarks/results/ddp)/.../ddp_<run>/results.json, logs and ddp_summary.md.
# A dry run of the flow on a CPU (gloo): DEVICE=cpu DATA=data/synthetic-ci-seed0 bash benchmarks/bench_ddp.sh 2 \
#   synthetic/hstu-small
set -euo pipefail
EPOCHS=${1:-5}
CONFIG=${2:-ml-1m/hstu-sampled-softmax-n128-final}
DATA=${DATA:-data/ml-1m-u2999}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${OUT:-$ROOT/benchmarks/results/ddp}
PY=${PYTHON:-python3}
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$DEVICE" != cpu ] && [ "$NGPU" -lt 2 ]; then
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
        --set "exp_dir=$DEST" --set "device=$DEVICE")
# name, GPUs, extra settings. DDP steps are eager (no CUDA graph under DDP), so the 1-GPU eager run is the
# like-for-like baseline; the 1-GPU default (CUDA graph) is what one GPU gives at its best.
for RUN in "1gpu 1" "1gpu_eager 1 cuda_graphs=off" "2gpu 2"; do
  set -- $RUN
  NAME=$1 N=$2 EXTRA=()
  [ -n "${3:-}" ] && EXTRA=(--set "$3")
  echo "== $NAME: python -m torch.distributed.run --standalone --nproc_per_node=$N -m hstu_tutorial.train ${COMMON[*]} ${EXTRA[*]} --set name=ddp_$NAME"
  $PY -m torch.distributed.run --standalone --nproc_per_node="$N" -m hstu_tutorial.train "${COMMON[@]}" \
    "${EXTRA[@]}" --set "name=ddp_$NAME" 2>&1 | tee "$DEST/ddp_$NAME.log" | tail -n 12
done
$PY - "$DEST" "$EPOCHS" <<'EOF'
import json, sys
from pathlib import Path

dest, epochs = Path(sys.argv[1]), int(sys.argv[2])
names = ["1gpu", "1gpu_eager", "2gpu"]
found = {n: next(dest.glob(f"**/ddp_{n}/results.json"), None) for n in names}
missing = [n for n, p in found.items() if p is None]
if missing:
    sys.exit(f"bench_ddp.sh: no results.json for the run(s) {missing} under {dest}; see the logs there")
res = {n: json.loads(p.read_text()) for n, p in found.items()}
# Epoch 0 pays for warm-up (autotuning, graph capture); compare the mean of the later epochs.
train_s = {n: sum(h["train_s"] for h in r["history"][1:]) / max(1, len(r["history"]) - 1) for n, r in res.items()}
lines = [
    "# DDP speed-up of the trainer (torchrun, DistributedDataParallel)",
    "",
    f"{res['1gpu']['device']}, torch {res['1gpu']['torch']}, {epochs} epochs, data {res['1gpu']['config']['data_dir']}; "
    "train seconds per epoch exclude evaluation and the first (warm-up) epoch",
    "",
    "| run | GPUs | CUDA graph | train s/epoch | speed-up vs 1 GPU eager | vs 1 GPU default | test HR@10 | test NDCG@10 |",
    "|---|---|---|---|---|---|---|---|",
]
for n in names:
    r, t = res[n], res[n]["history"][-1]["test"]
    lines.append(
        f"| {n} | {r.get('world_size', 1)} | {r['cuda_graphs']} | {train_s[n]:.3f} | "
        f"{train_s['1gpu_eager'] / train_s[n]:.2f} | {train_s['1gpu'] / train_s[n]:.2f} | "
        f"{t['hr@10']:.4f} | {t['ndcg@10']:.4f} |"
    )
text = "\n".join(lines) + "\n"
print(text)
(dest / "ddp_summary.md").write_text(text)
EOF
