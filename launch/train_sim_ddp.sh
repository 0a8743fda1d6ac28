#!/usr/bin/env bash
# Train with DistributedDataParallel: one process per GPU (nccl), or per CPU slot (gloo).
#   launch/train_sim_ddp.sh [key=value ...]                 all GPUs of this machine (NPROC=N to choose)
#   NPROC=2 launch/train_sim_ddp.sh device=cpu ...          two CPU processes (gloo)
#
# Multi-node: run the same command on every node with the rendezvous of node 0, e.g. 2 nodes x 8 GPUs:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NPROC=8 launch/train_sim_ddp.sh   # node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NPROC=8 launch/train_sim_ddp.sh   # node 1
# The datasets must be readable at the same path on every node; each node's first process builds the
# feature cache in cache_dir (a shared filesystem path lets the nodes reuse one copy). Only global rank 0
# writes the run folder. batch_size is per process: the effective batch is batch_size x processes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SIM2REAL_VENV:-.venv}
if [ -z "${NPROC:-}" ]; then
  NPROC=$("$VENV/bin/python" -c "import torch; print(max(1, torch.cuda.device_count()))")
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_SILENT=true
if [ "${NNODES:-1}" -gt 1 ]; then
  rdzv=(--nnodes "$NNODES" --node_rank "${NODE_RANK:?set NODE_RANK}" --master_addr "${MASTER_ADDR:?set MASTER_ADDR}"
        --master_port "${MASTER_PORT:-29500}")
else
  rdzv=(--standalone)
fi
exec "$VENV/bin/python" -m torch.distributed.run "${rdzv[@]}" --nproc_per_node "$NPROC" \
  -m sim2real train --config configs/train_sim.yaml "$@"
