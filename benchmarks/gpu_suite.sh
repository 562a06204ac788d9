#!/usr/bin/env bash
# The GPU measurements of BUILD.md in one call, most important first; each step has
# its own time limit so that one slow compile cannot starve the rest.
#   bash benchmarks/gpu_suite.sh OUT_DIR [DATA_DIR]
# DATA_DIR holds cifar10_q75_scans.npz, cifar10_q75.py and nb201_table.csv (the
# real-data check is skipped without them). JSON lines go to OUT_DIR/throughput.jsonl.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [DATA_DIR]}
data=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # peak memory of each process, not the pool
jsonl="$out/throughput.jsonl"
step() {  # step SECONDS NAME COMMAND...: run with a limit, log, keep going
  local limit=$1 name=$2; shift 2
  echo "=== $name (limit ${limit}s) $(date +%T)"
  local start=$SECONDS
  timeout "$limit" "$@" 2>>"$out/stderr.log" | tee -a "$jsonl"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'

step 150 small-fast python3 benchmarks/throughput.py --size=small --only=train_fast,eval_fast \
  --eval_archs=600
if [ -n "$data" ] && [ -f "$data/cifar10_q75_scans.npz" ]; then
  python3 "$data/cifar10_q75.py" /tmp/cifar10.npz --pack "$data/cifar10_q75_scans.npz"
  echo "=== real-data small run $(date +%T)"
  start=$SECONDS
  timeout 240 python3 -m spos_jax.main --config=configs/small.py --workdir=/tmp/real_small \
    --config.seeds='(0,)' --config.train.epochs=3 --config.data.source=npz \
    --config.data.path=/tmp/cifar10.npz --config.bench.path="$data/nb201_table.csv" \
    --config.eval.scope=all --config.train.log_every_steps=20 > "$out/real_small.log" 2>&1
  echo "=== real-data small run: exit $? after $((SECONDS - start))s"
  grep -E "img/s|archs/s|error" "$out/real_small.log" | tail -8
  cp /tmp/real_small/results/*/metrics.json "$out/real_small_metrics.json" 2>/dev/null
fi
step 120 small-reference python3 benchmarks/throughput.py --size=small \
  --only=train_reference,eval_reference --reference_eval_archs=10
step 120 medium-fast python3 benchmarks/throughput.py --size=medium --only=train_fast,eval_fast \
  --eval_archs=200
step 90 small-5-seeds python3 benchmarks/throughput.py --size=small --seeds=5 --only=train_fast
echo "=== done $(date +%T)"
