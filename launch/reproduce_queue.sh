#!/usr/bin/env bash
# Train and score the next runs of the reproduction queue (spos_jax.report.claims.QUEUE)
# within a time budget, and pack their results folders (no checkpoints) for
# results/paper/.
#
#   bash launch/reproduce_queue.sh OUT_DIR BUDGET_SECONDS DATA [EPOCHS] [RUNS]
#
# OUT_DIR         where the archives and the summary go (created if missing)
# BUDGET_SECONDS  wall-clock seconds for everything: a run is started only while
#                 MIN_START_S seconds are left, and every step runs under `timeout`
#                 up to the end of the budget less 20 s kept for packing (a step that
#                 ignores SIGTERM is killed 20-30 s later, so the script may overrun
#                 the budget by a few seconds)
# DATA            CIFAR-10 as an .npz file (x_train, y_train, x_test, y_test, as
#                 `python -m spos_jax.data convert` writes it), or a folder holding the
#                 JPEG q75 copy cifar10_q75_scans.npz and its decoder cifar10_q75.py
#                 (decoded once to /tmp/cifar10_q75.npz)
# EPOCHS          train.epochs of every run (default 10); refused when it differs from
#                 the epochs of committed runs of the same size (results/paper/), since
#                 the claims compare runs at one epoch count
# RUNS            comma list, in order (default: the whole queue, in its order of
#                 value); runs with results under results/paper/ are skipped
#
# Each run: configs/small.py (medium.py for m-*) with the run's overrides from its
# sweep file (launch.sweep --only), 5 seeds, EPOCHS epochs, ranked against the
# packaged NB201 table's cifar10_test column (bench.path=builtin); then a whole-space
# pass (eval.scope=all) for the first seed (FULL_SEEDS=first), every seed (all) or
# none. A budget too short for the whole queue packs the runs that finished; runs
# committed under results/paper/ (or finished under WORK) are skipped, so a rerun
# continues with the next ones.
#
# Out: OUT_DIR/reproduction_runs_e<EPOCHS>.tar.gz (the run folders with results:
# config.json, run_info.json, sweep.json, TRAINED, results/*/{metrics.json,
# predictions.csv}, tb/), reproduction_logs_e<EPOCHS>.tar.gz (every attempted run's
# logs; not for git) and reproduction_summary.txt (what ran, how long, the epochs).
# results/paper/README.md says how to add them to the repository.
#
# Environment: LANES (runs at once on the GPU, default 2), MIN_START_S (seconds a run
# needs to be started, default 240), FULL_SEEDS (first|all|none), WHEELS (a folder of
# wheels to install first, for a machine without the project's dependencies; default
# .whl), WORK (scratch root, default /tmp/reproduction_runs), COMMITTED (default
# results/paper), SIZE_CONFIG (launch.sweep --size_config, e.g. s=configs/tiny.py for
# a CPU try-out), EXTRA (more --config.KEY=VALUE flags for every run).
#
# Choosing EPOCHS and BUDGET_SECONDS: estimates from BUILD.md's H200 figures
# (2026-11-27, commit 94f54f0, 1 seed; 5 seeds at once are not measured yet).
#   Fixed cost per run: process start and data 15 s; train-step compile 65 s (64.4 s
#   measured, 1 seed; every queue run compiles its own program: |O| and sampling
#   differ); scoring compile ~30 s; the paper's groups, ~1450 archs x 5 seeds at >= 100
#   archs/s (end-to-end bound measured: < 103), <= 75 s; the one-seed whole-space pass,
#   restore + cached compile 20 s plus 15625 archs / 100 archs/s = 156 s for s-all,
#   4096 -> 41 s with one op masked, 729 -> 7 s for Zero+Pool.
#   => before training: s-all ~360 s, one op masked ~245 s, Zero+Pool ~210 s.
#   Training: 5 seeds x 45,000 images = 225,000 images an epoch; at 58,139 images/s
#   (1 seed measured; 5 vmapped seeds should do no worse) 3.9 s an epoch.
#   EPOCHS=10: 39 s, so s-all takes ~400 s; with LANES=2 the second lane compiles
#   while the first trains, so one more run (one op masked, ~285 s) fits beside it:
#   BUDGET_SECONDS=450 makes ~2 runs, so the 8 small runs need ~1800 s in all. The
#   paper's 250 epochs need ~16 min of training per small run.
#   Medium (C=64, N=4, ~8x the FLOPs): ~31 s an epoch, 10 epochs ~310 s + ~150 s
#   fixed: run it alone (LANES=1, BUDGET_SECONDS >= 470). Its whole-space pass (~8x
#   slower scoring) needs several minutes more; without it REPRODUCTION.md shows no
#   whole-space row for the run.
set -u
usage='usage: reproduce_queue.sh OUT_DIR BUDGET_SECONDS DATA [EPOCHS] [RUNS]'
out=${1:?$usage}
budget=${2:?$usage}
data=${3:?$usage}
epochs=${4:-10}
runs=${5:-}
lanes=${LANES:-2}
min_start=${MIN_START_S:-240}
full_seeds=${FULL_SEEDS:-first}
wheels=${WHEELS:-.whl}
work=${WORK:-/tmp/reproduction_runs}
committed=${COMMITTED:-results/paper}
pack_reserve=20  # seconds kept for packing
start_time=$(date +%s)
export PYTHONUNBUFFERED=1

fail() { echo "error: $*" >&2; exit 2; }
[[ "$budget" =~ ^[1-9][0-9]*$ ]] || fail "BUDGET_SECONDS=$budget is not a positive integer"
deadline=$((start_time + budget))
[[ "$epochs" =~ ^[1-9][0-9]*$ ]] || fail "EPOCHS=$epochs is not a positive integer"
[[ "$lanes" =~ ^[1-9]$ ]] || fail "LANES=$lanes is not one of 1..9"
case "$full_seeds" in first|all|none) ;; *) fail "FULL_SEEDS=$full_seeds is not one of first, all, none";; esac
if [ -f "$data" ]; then
  [[ "$data" == *.npz ]] || fail "DATA=$data is a file but not an .npz"
elif [ -d "$data" ]; then
  for f in cifar10_q75_scans.npz cifar10_q75.py; do
    [ -f "$data/$f" ] \
      || fail "DATA=$data has no $f (a DATA folder holds cifar10_q75_scans.npz and cifar10_q75.py)"
  done
else
  fail "DATA=$data is neither an .npz file nor a folder"
fi
mkdir -p "$out" "$work/.logs" || fail "cannot create $out or $work"
out=$(cd "$out" && pwd)
data=$(cd "$(dirname "$data")" && pwd)/$(basename "$data")
cd "$(dirname "$0")/.." || fail "cannot enter the repository root"
rm -rf "$work/.claims" && mkdir "$work/.claims"  # a lane claims a run by creating its folder

if compgen -G "$wheels/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$wheels"/*.whl || fail "installing the wheels of $wheels failed"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c 'import ml_collections, tensorboardX, jax, flax, optax, orbax.checkpoint' \
  || fail "a package is missing: pip install -e . (or put its wheels in WHEELS=$wheels)"
if [ "$lanes" -gt 1 ] && [ -z "${XLA_PYTHON_CLIENT_MEM_FRACTION:-}" ]; then
  export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / $lanes, 3))")
fi
[ -n "$runs" ] || runs=$(python3 -c 'from spos_jax.report import claims; print(",".join(claims.QUEUE))') \
  || fail "cannot read the queue from spos_jax.report.claims"

# Runs of the queue only, and the same epochs as the committed runs of each size.
python3 - "$committed" "$epochs" "$runs" <<'EOF' || exit 2
import json, os, sys
from spos_jax.report import claims
root, epochs, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(',')
unknown = [n for n in names if n not in claims.QUEUE]
if unknown:
  sys.exit(f'error: RUNS names {", ".join(unknown)}, not in the queue: '
           f'{", ".join(claims.QUEUE)}')
sizes = {n.split('-', 1)[0] for n in names}
for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
  try:
    with open(os.path.join(root, name, 'config.json')) as f:
      found = json.load(f)['train.epochs']
  except (OSError, ValueError, KeyError):
    continue
  if name.split('-', 1)[0] in sizes and found != epochs:
    sys.exit(f'error: EPOCHS={epochs}, but the committed run {root}/{name} trained '
             f'{found} epochs; the claims compare runs at one count: pass {found}')
EOF

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "no nvidia-smi: running on $(uname -m) CPU"
python3 -c 'import jax; print("jax", jax.__version__, jax.devices())'
if [ -f "$data" ]; then
  npz=$data
  data_words="CIFAR-10 from $npz"
else
  npz=/tmp/cifar10_q75.npz  # the name says what it is: config.json records it
  [ -f "$npz" ] || python3 "$data/cifar10_q75.py" "$npz" --pack "$data/cifar10_q75_scans.npz" \
    || fail "decoding $data/cifar10_q75_scans.npz failed"
  data_words="$npz (real CIFAR-10, JPEG q75 copy)"
fi
bench=builtin  # the NB201 table packaged with spos_jax
summary="$out/reproduction_summary.txt"
{
  echo "reproduce_queue.sh: EPOCHS=$epochs (reduced from the paper's 250)"
  echo "data $data_words, ground truth the packaged NB201 table"
  echo "runs: $runs; LANES=$lanes BUDGET_SECONDS=$budget FULL_SEEDS=$full_seeds"
  echo "SIZE_CONFIG=${SIZE_CONFIG:-} EXTRA=${EXTRA:-}"
} > "$summary"

left() { echo $((deadline - $(date +%s) - pack_reserve)); }
note() { echo "$(date +%T) $*" | tee -a "$summary"; }
sweep_of() {  # the sweep file that names the run
  case "$1" in
    s-uniform-*|m-uniform-*) echo configs/sweeps/fig6.py ;;
    *) echo configs/sweeps/fig4.py ;;
  esac
}
has_results() { [ -f "$1/results/running-groups/metrics.json" ]; }

full_space() {  # full_space WORKDIR LIMIT: the whole-space pass
  local workdir=$1 limit=$2
  if [ "$full_seeds" = all ]; then
    timeout --kill-after=20 "$limit" python3 -m spos_jax.evaluate --workdir="$workdir" \
      --compilation_cache="$work/.jax_cache" --config.eval.scope=all \
      --config.bench.path="$bench"
    return
  fi
  # One seed: the first seed's weights, scored over the whole subset into
  # results/running-all-seed<S> (metrics.json lists that seed alone).
  timeout --kill-after=20 "$limit" python3 - "$workdir" "$bench" "$work/.jax_cache" <<'EOF'
import sys
import jax
from spos_jax import config as config_lib
from spos_jax import run
from spos_jax import workdir as workdir_lib
workdir, bench, cache = sys.argv[1:4]
jax.config.update('jax_compilation_cache_dir', cache)
config = config_lib.from_flat(workdir_lib.load_config_record(workdir))
states, data = run.restore_trained_states(config, workdir)
first = config.seeds[0]
config.seeds = (first,)
config.eval.scope = 'all'
config.eval.name = f'running-all-seed{first}'
config.bench.path = bench
run.evaluate_run(config, workdir, jax.tree.map(lambda a: a[:1], states), data)
EOF
}

run_one() {  # run_one NAME: train + score the groups, then the whole-space pass
  local name=$1 workdir="$work/$1" log="$work/.logs/$1.txt" begin status limit
  begin=$(date +%s)
  limit=$(left)
  note "start $name (${limit}s left)"
  # shellcheck disable=SC2086  # EXTRA and the size flag are lists of flags
  timeout --kill-after=30 "$limit" python3 -m launch.sweep --sweep="$(sweep_of "$name")" \
    --root="$work" --only="^${name//+/\\+}\$" ${SIZE_CONFIG:+--size_config=$SIZE_CONFIG} \
    --config.train.epochs="$epochs" --config.data.source=npz --config.data.path="$npz" \
    --config.bench.path="$bench" ${EXTRA:-} > "$log" 2>&1
  status=$?
  if ! has_results "$workdir"; then
    note "FAILED $name: exit $status after $(( $(date +%s) - begin ))s; last lines:"
    tail -n 5 "$workdir/log.txt" "$log" 2>/dev/null | tee -a "$summary"
    return
  fi
  note "trained and scored $name in $(( $(date +%s) - begin ))s"
  [ "$full_seeds" = none ] && return
  limit=$(left)
  if [ "$limit" -lt 30 ]; then note "no time left for $name's whole-space pass"; return; fi
  full_space "$workdir" "$limit" >> "$log" 2>&1
  status=$?
  note "whole-space pass of $name: exit $status, $(( $(date +%s) - begin ))s in all"
}

lane() {  # take the next unclaimed run of the queue until time runs out
  local name
  for name in ${runs//,/ }; do
    if has_results "$committed/$name" || has_results "$work/$name"; then continue; fi
    mkdir "$work/.claims/$name" 2>/dev/null || continue  # another lane has it
    if [ "$(left)" -lt "$min_start" ]; then
      note "not started: $name ($(left)s left, a run needs $min_start)"
      continue
    fi
    run_one "$name"
  done
}

for ((i = 0; i < lanes; i++)); do
  lane &
  sleep 2  # lanes start in queue order
done
wait

cd "$work" || exit 2
done_runs=()
for name in ${runs//,/ }; do
  has_results "$name" && done_runs+=("$name")
done
if [ ${#done_runs[@]} -gt 0 ]; then
  tar -czf "$out/reproduction_runs_e$epochs.tar.gz" --exclude='checkpoints*' \
    --exclude='log.txt' "${done_runs[@]}"
fi
tar -czf "$out/reproduction_logs_e$epochs.tar.gz" .logs $(ls -d */log.txt */FAILED 2>/dev/null)
for name in "${done_runs[@]}"; do  # what each packed run recorded, from its config.json
  python3 - "$name" <<'EOF' | tee -a "$summary"
import json, sys
c = json.load(open(sys.argv[1] + '/config.json'))
print('%s: train.epochs %s, seeds %s, data %s, bench column %s' % (
    sys.argv[1], c['train.epochs'], c['seeds'], c['data.path'], c['bench.metric']))
EOF
done
note "packed ${#done_runs[@]} run(s) with results: ${done_runs[*]:-none}" \
  "(EPOCHS=$epochs); $(( $(date +%s) - start_time ))s in all"
ls -l "$out"
