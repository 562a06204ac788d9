#!/usr/bin/env bash
# GPU measurements in one script: where the time goes (kernel profiles) and the
# throughput, compile and memory figures of BUILD.md, most valuable first, each step
# under its own time limit so that one slow compile cannot starve the rest.
#
#   bash benchmarks/gpu_suite.sh OUT_DIR BUDGET_SECONDS [STEPS]
#
# OUT_DIR         receives gpu_suite.tar.gz (every JSON line, the markdown profile
#                 tables, the logs; no raw traces) and, for reading at once,
#                 throughput.jsonl and profile.md
# BUDGET_SECONDS  wall-clock seconds for all steps; a step's limit is cut to the time
#                 left, and a step is skipped when less than 20 s are left. The
#                 default STEPS need at most 260 s (the sum of their limits).
# STEPS           comma list (default profile-small,profile-small-5,seeds,scoring,
#                 scoring-large):
#   profile-small     kernel profile: small, 1 seed, 20 train steps + scoring 80 archs;
#                     its `compile` row is the cold compile (empty cache)
#   profile-small-5   kernel profile: small, 5 seeds vmapped, 20 train steps
#   seeds             small train: 5 seeds vmapped / 5 one after another (lax.map) /
#                     1 seed; the vmapped and 1-seed programs load from the cache the
#                     profiles filled (compile_s from the cache, in a second process)
#   scoring           full-space scoring rate: the whole cosets of 400 random archs
#                     (~2000 archs, 5000 images each), as full-space scoring packs them;
#                     default eval settings (8 groups x 1000 images a call)
#   scoring-large     the same with eval.groups_per_call=32 and eval.batch_size=2500
#   compile-cold      (only when named) small 1 seed in an empty cache: trace, lower,
#                     compile
#   scan              (only when named) model.scan_cells compile and step
#   medium-5          (only when named) medium, 5 seeds
# All processes share one persistent compilation cache (in a temporary work folder),
# so a program compiled by one step loads in the next; each row's trace_s, lower_s
# and compile_s say which stage took the time. Data are synthetic.
#
# Needs the project's dependencies (pip install -e '.[cuda]'; tensorboardX and tfds are
# not imported here). On a machine where only jax, flax, optax and orbax are installed,
# WHEELS=DIR installs the wheels in DIR (e.g. from `pip download ml_collections
# --no-deps -d DIR`) into the work folder first.
# SPOS_SUITE_TINY=1 swaps in CPU-sized programs (C=4, batch 8, fp32) and multiplies
# the step limits by 4, to try the script itself on a CPU.
set -u
usage='usage: gpu_suite.sh OUT_DIR BUDGET_SECONDS [STEPS]'
out=${1:?$usage}
budget=${2:?$usage}
steps=${3:-profile-small,profile-small-5,seeds,scoring,scoring-large}
wheels=${WHEELS:-}
[[ "$budget" =~ ^[1-9][0-9]*$ ]] || { echo "error: BUDGET_SECONDS=$budget is not a positive integer" >&2; exit 2; }
deadline=$((SECONDS + budget))
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # peak memory of each process, not the pool
export XLA_PYTHON_CLIENT_MEM_FRACTION=.9    # medium with 5 seeds needs more than 75%
if [ -n "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" \
    "$wheels"/*.whl && export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
cache="$work/jax_cache"
jsonl="$work/throughput.jsonl"
scale=1  # the time limits, times this
if [ "${SPOS_SUITE_TINY:-0}" = 1 ]; then
  scale=4  # XLA:CPU compiles and runs far slower than the GPU
  # XLA:CPU's quick pipeline (as the tests use): the try-out checks the script, not speed.
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  small="--size=micro --batch_size=8 --steps_per_dispatch=1 --precision=fp32"
  small+=" --train_images=200 --val_images=40 --eval_batch_size=20 --groups_per_call=1"
  medium="$small"
  big_eval="--groups_per_call=2 --eval_batch_size=40"
  calls="--train_calls=1 --score_chunks=1"
  eval_archs=4
else
  small="--size=small"
  medium="--size=medium"
  big_eval="--groups_per_call=32 --eval_batch_size=2500"
  calls="--train_calls=2 --score_chunks=2"
  eval_archs=400  # their whole cosets: ~2000 archs, an eighth of the full space
fi
wanted() { [[ ",$steps," == *",$1,"* ]]; }
step() {  # step SECONDS NAME COMMAND...: run with a limit, keep the JSON lines, go on
  local limit=$(($1 * scale)) name=$2 left=$((deadline - SECONDS)); shift 2
  wanted "$name" || return 0
  if [ "$left" -lt 20 ]; then
    echo "{\"suite_step\": \"$name\", \"skipped\": \"$(( left > 0 ? left : 0 ))s of the budget left\"}" | tee -a "$jsonl"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s) $(date +%T)"
  local start=$SECONDS
  timeout "$limit" "$@" 2>>"$work/stderr.log" | tee -a "$jsonl"
  local status=${PIPESTATUS[0]}
  echo "{\"suite_step\": \"$name\", \"exit\": $status, \"seconds\": $((SECONDS - start))}" \
    | tee -a "$jsonl"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
} 2>&1 | tee "$work/versions.txt"

T=benchmarks/throughput.py
P="benchmarks/kernel_profile.py --compilation_cache=$cache"
# shellcheck disable=SC2086  # the size strings are lists of flags
{
step 75 profile-small python3 $P --markdown="$work/profile-small.md" $small $calls --seeds=1
step 50 profile-small-5 python3 $P --markdown="$work/profile-small-5.md" $small $calls \
  --seeds=5 --only=train
step 55 seeds python3 $T $small --seeds=5 --seed_modes=parallel,sequential,single \
  --only=train_fast --min_seconds=2 --compilation_cache="$cache"
step 40 scoring python3 $T $small --only=eval_fast --eval_archs=$eval_archs \
  --compilation_cache="$cache"
step 40 scoring-large python3 $T $small $big_eval --only=eval_fast --eval_archs=$eval_archs \
  --compilation_cache="$cache"
step 90 compile-cold python3 $T $small --seeds=1 --only=train_fast --min_seconds=1 \
  --compilation_cache="$work/cold_cache"
step 90 scan python3 $T $small --seeds=1 --scan_cells --only=train_fast --min_seconds=1 \
  --compilation_cache="$cache"
step 150 medium-5 python3 $T $medium --seeds=5 --only=train_fast,eval_fast \
  --eval_archs=200 --min_seconds=2 --compilation_cache="$cache"
} 2>&1 | tee "$work/suite.log"

for f in profile-small profile-small-5; do
  [ -f "$work/$f.md" ] && { cat "$work/$f.md"; echo; }
done > "$work/profile.md"
cp "$jsonl" "$work/profile.md" "$out/" 2>/dev/null
tar -czf "$out/gpu_suite.tar.gz" -C "$work" --exclude=jax_cache --exclude=cold_cache \
  --exclude=site .
rm -rf "$work"
echo "=== done $(date +%T): $out/gpu_suite.tar.gz"
