#!/usr/bin/env bash
# Scale generation out over a cluster with a SLURM job array: one shard per array task, then merge.
#
#   sbatch --array=0-15 launch/generate_slurm.sh data/sim/big 100000 [key=value ...]
#   # when every task has finished (e.g. sbatch --dependency=afterok:<jobid>):
#   .venv/bin/sim2real merge data/sim/big.shards/shard-* --out data/sim/big
#
# Shard k renders the scene groups k, k+n, k+2n, ... (n = array size; a group = views_per_scene
# consecutive frames, so n must not exceed ceil(NUM_FRAMES / views_per_scene)); frame i depends only
# on (seed, i), so
# the merged dataset is byte-identical to a single-machine run with the same seed. A task that is
# pre-empted or killed resumes where it stopped when re-queued (sbatch --requeue). Any other
# scheduler works the same way: run `sim2real generate --shard k --num-shards n` once per k.
#SBATCH --job-name=sim2real-generate
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=02:00:00
#SBATCH --requeue
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
out=${1:?usage: generate_slurm.sh OUT NUM_FRAMES [key=value ...]}
frames=${2:?usage: generate_slurm.sh OUT NUM_FRAMES [key=value ...]}
shift 2
k=${SLURM_ARRAY_TASK_ID:?run under sbatch --array, or set SLURM_ARRAY_TASK_ID}
n=${SLURM_ARRAY_TASK_COUNT:?run under sbatch --array, or set SLURM_ARRAY_TASK_COUNT}
exec "${SIM2REAL_VENV:-.venv}/bin/sim2real" generate --config configs/generate.yaml \
  --shard "$k" --num-shards "$n" --num-frames "$frames" --workers "${SLURM_CPUS_PER_TASK:-2}" \
  --out "$out.shards/shard-$k" --no-progress "$@"
