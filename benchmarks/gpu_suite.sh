#!/usr/bin/env bash
# The GPU measurements of BUILD.md, most important first; each step has its own time
# limit so that one slow compile cannot starve the rest.
#   bash benchmarks/gpu_suite.sh OUT_DIR [DATA_DIR] [STEPS]
# STEPS: comma list of the step names below (default: all, in order), so that the
# suite can be split over several calls of a time-limited machine. DATA_DIR holds
# cifar10_q75_scans.npz, cifar10_q75.py and nb201_table.csv (the real-data step is
# skipped without them). JSON lines go to OUT_DIR/throughput.jsonl.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [DATA_DIR] [STEPS]}
data=${2:-}
steps=${3:-small-5-seeds,small-5-seeds-scan,medium-5-seeds,real-data,small-1-seed,small-reference}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # peak memory of each process, not the pool
jsonl="$out/throughput.jsonl"
wanted() { [[ ",$steps," == *",$1,"* ]]; }
step() {  # step SECONDS NAME COMMAND...: run with a limit, log, keep going
  local limit=$1 name=$2; shift 2
  wanted "$name" || return 0
  echo "=== $name (limit ${limit}s) $(date +%T)"
  local start=$SECONDS
  timeout "$limit" "$@" 2>>"$out/stderr.log" | tee -a "$jsonl"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s"
}
real_data() {
  [ -n "$data" ] && [ -f "$data/cifar10_q75_scans.npz" ] || { echo "no DATA_DIR: skipped"; return 0; }
  python3 "$data/cifar10_q75.py" /tmp/cifar10.npz --pack "$data/cifar10_q75_scans.npz"
  timeout 300 python3 -m spos_jax.main --config=configs/small.py --workdir=/tmp/real_small \
    --config.seeds='(0,)' --config.train.epochs=3 --config.data.source=npz \
    --config.data.path=/tmp/cifar10.npz --config.bench.path="$data/nb201_table.csv" \
    --config.eval.scope=all --config.train.log_every_steps=20 > "$out/real_small.log" 2>&1
  echo "exit $?"
  grep -E "img/s|archs/s|error" "$out/real_small.log" | tail -8
  cp /tmp/real_small/results/*/metrics.json "$out/real_small_metrics.json" 2>/dev/null
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'

B=benchmarks/throughput.py
step 180 small-5-seeds python3 $B --size=small --seeds=5 --only=train_fast,eval_fast --eval_archs=600
step 120 small-5-seeds-scan python3 $B --size=small --seeds=5 --only=train_fast --scan_cells
step 180 medium-5-seeds python3 $B --size=medium --seeds=5 --only=train_fast,eval_fast --eval_archs=200
wanted real-data && { echo "=== real-data $(date +%T)"; real_data; }
step 120 small-1-seed python3 $B --size=small --only=train_fast
step 150 small-reference python3 $B --size=small --only=train_reference,eval_reference \
  --reference_eval_archs=10
echo "=== done $(date +%T)"
