#!/usr/bin/env bash
# Start this machine's share of a multi-machine `selfsup train` with torchrun; run it on every machine.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0.cluster MASTER_PORT=29500 NPROC=8 \
#     bash scripts/torchrun.sh --name vit-run --config my_recipe.yaml --data shards --root s3://bucket/shards
#
# NNODES machines, NODE_RANK this one (0 on the machine at MASTER_ADDR), NPROC processes (GPUs) here.
# The arguments are `selfsup train`'s; --num-nodes and --devices are filled in. Every machine needs the
# same --name (the processes agree on the run folder without talking) and the same data (a shared
# folder, or shards at one URL); rank 0 writes the run folder. tests/test_multinode.py runs it as two
# "machines" on one computer.
set -euo pipefail
: "${NNODES:?set NNODES, the number of machines}" "${NODE_RANK:?set NODE_RANK, the rank of this machine (0..NNODES-1)}"
: "${MASTER_ADDR:?set MASTER_ADDR, the address of the machine with NODE_RANK=0}"
MASTER_PORT="${MASTER_PORT:-29500}"
NPROC="${NPROC:-1}"
exec "${PYTHON:-python}" -m torch.distributed.run --nnodes "$NNODES" --node-rank "$NODE_RANK" \
  --nproc-per-node "$NPROC" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
  -m selfsup train --num-nodes "$NNODES" --devices "$NPROC" "$@"
