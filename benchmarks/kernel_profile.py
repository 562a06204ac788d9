"""Where the device time goes: a jax.profiler trace summarised by kernel kind.

python benchmarks/kernel_profile.py --size=small --seeds=5 [--markdown=FILE]

Traces a few train steps and one scoring pass (after warm-up calls) and sorts every
device kernel into a kind: convolution forward / input gradient / weight gradient,
reductions (the batch-norm statistics, nearly all of this model's reductions),
pooling (reduce-window: the 3x3 average pool), elementwise fusions, gathers and
permutations, copies and transposes, other; plus the host gaps, the time inside the
traced span when no kernel ran. Prints one JSON
line per kind per program (count and time per optimizer step, or per scored arch),
a `compile` line with the train step's trace_s / lower_s / compile_s, and writes a
markdown table (--markdown, else stderr).

Kinds come from the compiled HLO of each program (instruction name -> opcode, fused
ops, cuDNN call target, conv window), so the same rules read the GPU trace (stream
kernels tagged with `hlo_op`: fusions, `cudnn-conv-bw-filter.N`, ...) and the CPU
trace (XLA:CPU thunks tagged with `hlo_op`). Kernels without an HLO entry (cuDNN's
own kernels, memcpy) fall back to their names (`*wgrad*`, `*dgrad*`, `*fprop*`...).
Times of kernels that overlap (XLA:CPU runs thunks on several threads) are summed
per kind; the total is the sum of the kinds plus the host gaps.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # pylint: disable=g-import-not-at-top  # the benchmarks' shared setup

from spos_jax import scoring  # pylint: disable=g-import-not-at-top
from spos_jax import space  # pylint: disable=g-import-not-at-top
from spos_jax import train  # pylint: disable=g-import-not-at-top

KINDS = ('conv_forward', 'conv_input_grad', 'conv_weight_grad', 'reduction', 'pooling',
         'elementwise', 'gather_permute', 'copy_transpose', 'other')
HOST_GAP = 'host_gap'
# Ops that run other computations: their own span contains the kernels they launch.
_CONTAINERS = {'while', 'conditional', 'call', 'async-start', 'async-done'}
_GATHERS = {'gather', 'scatter', 'dynamic-slice', 'dynamic-update-slice'}
_LAYOUT = {'copy', 'transpose', 'bitcast', 'reshape', 'parameter', 'tuple',
           'get-tuple-element', 'broadcast', 'constant', 'slice', 'concatenate'}
# Timeline lines that the profiler derives from the kernels (they repeat them).
_DERIVED_LINES = ('XLA Modules', 'XLA Ops', 'Framework', 'TensorFlow', 'Steps', 'Source',
                  'XLA TraceMe', 'Launch Stats')


@dataclasses.dataclass(frozen=True)
class Instruction:
  """What the classification needs of one HLO instruction."""
  opcode: str
  fused_ops: frozenset  # opcodes of the computation it calls (fusions), with nesting
  conv: str = ''  # conv_* kind of the instruction or of the convolution it fuses


_COMPUTATION = re.compile(r'^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$')
_OPCODE = re.compile(r'(?:^|[\s}\]])([a-z][a-z0-9\-]*)\(')


def _conv_sizes(rest: str) -> tuple[int, int]:
  """(window product, output spatial product) of a convolution's HLO text."""
  window = re.search(r'window=\{size=([\dx]+)', rest)
  labels = re.search(r'dim_labels=\w+_\w+->(\w+)', rest)
  shape = re.match(r'\w+\[([\d,]*)\]', rest)
  win = int(np.prod([int(s) for s in window.group(1).split('x')])) if window else 1
  if not labels or not shape or not shape.group(1):
    return win, 0
  dims = [int(s) for s in shape.group(1).split(',')]
  spatial = [d for d, label in zip(dims, labels.group(1)) if label.isdigit()]
  return win, int(np.prod(spatial)) if spatial else 1


def _conv_kind(opcode: str, rest: str) -> str:
  """conv_* kind of a convolution or cuDNN conv call; '' for anything else.

  cuDNN calls name their direction. A plain HLO convolution (XLA:CPU) is a weight
  gradient when its window is larger than its output (it slides the output gradient
  over the activations), an input gradient when jax's transpose made it. A dot that
  jax emitted as a convolution (a 1x1 conv XLA rewrote) counts as forward or input
  gradient by the same metadata (a rewritten 1x1 weight gradient would count as input
  gradient; XLA:CPU was not seen to rewrite those).
  """
  target = re.search(r'custom_call_target="([^"]+)"', rest)
  if opcode == 'custom-call' and target and 'conv' in target.group(1).lower():
    direction = target.group(1).lower()
    if 'backwardfilter' in direction:
      return 'conv_weight_grad'
    return 'conv_input_grad' if 'backwardinput' in direction else 'conv_forward'
  op_name = re.search(r'op_name="([^"]*)"', rest)
  transposed = bool(op_name) and 'transpose(' in op_name.group(1)
  if opcode == 'dot':  # XLA:CPU turns some 1x1 convolutions into dots; metadata says so
    if not op_name or 'conv_general_dilated' not in op_name.group(1):
      return ''
    return 'conv_input_grad' if transposed else 'conv_forward'
  if opcode != 'convolution':
    return ''
  window, out_spatial = _conv_sizes(rest)
  if out_spatial and window > out_spatial:
    return 'conv_weight_grad'
  return 'conv_input_grad' if transposed else 'conv_forward'


def parse_hlo(text: str) -> dict[str, Instruction]:
  """Instruction name -> Instruction, for every instruction of an HLO module's text."""
  raw, ops_of, calls_of, convs_of, current = {}, {}, {}, {}, None
  for line in text.splitlines():
    header = _COMPUTATION.match(line)
    if header and ' = ' not in line:
      current = header.group(1)
      ops_of[current], calls_of[current], convs_of[current] = set(), [], []
      continue
    found = _INSTRUCTION.match(line)
    opcode = found and _OPCODE.search(found.group(2))
    if not opcode or current is None:
      continue
    name, rest = found.groups()
    calls = re.findall(r'calls=%?([\w.\-]+)', rest)
    conv = _conv_kind(opcode.group(1), rest)
    ops_of[current].add(opcode.group(1))
    calls_of[current] += calls
    convs_of[current] += [conv] if conv else []
    raw[name] = (opcode.group(1), calls, conv)

  def ops_called(computations, seen=frozenset()):
    out = set()
    for comp in computations:
      if comp in ops_of and comp not in seen:
        out |= ops_of[comp] | ops_called(calls_of[comp], seen | {comp})
    return out

  table = {}
  for name, (opcode, calls, conv) in raw.items():
    fused_convs = [k for comp in calls for k in convs_of.get(comp, ())]
    table[name] = Instruction(opcode, frozenset(ops_called(calls)),
                              conv or (fused_convs[0] if fused_convs else ''))
  return table


def classify_instruction(ins: Instruction) -> str | None:
  """Kind of a kernel that runs this instruction; None for control flow (while, call)."""
  if ins.opcode in _CONTAINERS:
    return None
  if ins.conv:
    return ins.conv
  ops = ins.fused_ops | {ins.opcode}
  if 'reduce' in ops:
    return 'reduction'
  if ops & {'reduce-window', 'select-and-scatter'}:
    return 'pooling'
  if ops & _GATHERS:
    return 'gather_permute'
  if ops <= _LAYOUT | {'fusion'}:
    return 'copy_transpose'
  if ops & {'dot', 'custom-call', 'sort', 'rng', 'rng-bit-generator'}:
    return 'other'
  return 'elementwise'


def classify_name(name: str) -> str:
  """Kind of a kernel from its name alone (cuDNN / cuBLAS kernels, memcpy, other modules)."""
  n = name.lower()
  rules = (('conv_weight_grad', ('wgrad', 'bw-filter', 'backwardfilter')),
           ('conv_input_grad', ('dgrad', 'bw-input', 'backwardinput')),
           ('conv_forward', ('fprop', 'conv')),
           ('pooling', ('reduce-window', 'reduce_window', 'pool')),
           ('reduction', ('reduce', 'reduction')),
           ('gather_permute', ('gather', 'scatter', 'dynamic')),
           ('copy_transpose', ('transpose', 'copy', 'memcpy', 'memset')),
           ('elementwise', ('fusion',)))
  for kind, needles in rules:
    if any(needle in n for needle in needles):
      return kind
  return 'other'


def _key(name: str) -> str:
  """Instruction names as GPU kernel names spell them ('loop_add_fusion.3' -> '..._3')."""
  return re.sub(r'[.\-]', '_', name)


@dataclasses.dataclass(frozen=True)
class Kernel:
  name: str  # the hlo_op it runs, else the kernel's own name
  module: str  # the HLO module, '' where the trace does not say
  start_us: float
  dur_us: float
  kernel: str = ''  # the kernel's own name (cuDNN's, a fusion's)


def load_trace(log_dir: str) -> dict:
  """The newest perfetto_trace.json.gz that jax.profiler.trace wrote under log_dir."""
  paths = sorted(glob.glob(os.path.join(log_dir, '**', 'perfetto_trace.json.gz'),
                           recursive=True), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f'no perfetto_trace.json.gz under {log_dir}')
  with gzip.open(paths[-1], 'rt') as f:
    return json.load(f)


def device_kernels(trace: dict) -> list[Kernel]:
  """The device's kernels: GPU/TPU stream lines, else XLA:CPU's hlo_op-tagged thunks."""
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  process, thread = {}, {}
  for e in events:
    if e.get('ph') == 'M' and e.get('name') == 'process_name':
      process[e['pid']] = e['args']['name']
    elif e.get('ph') == 'M' and e.get('name') == 'thread_name':
      thread[e['pid'], e['tid']] = e['args']['name']
  device_pids = {pid for pid, name in process.items()
                 if name.startswith('/device:') and 'CPU' not in name}
  lines = {line for line, name in thread.items() if line[0] in device_pids}
  streams = {line for line in lines if thread[line].startswith('Stream')}
  lines = streams or {line for line in lines if not thread[line].startswith(_DERIVED_LINES)}
  kernels = []
  for e in events:
    if e.get('ph') != 'X':
      continue
    args = e.get('args') or {}
    on_device = (e['pid'], e.get('tid')) in lines if device_pids else 'hlo_op' in args
    if on_device and not e['name'].startswith('end: '):
      kernels.append(Kernel(args.get('hlo_op') or e['name'], args.get('hlo_module', ''),
                            float(e['ts']), float(e.get('dur', 0.0)), e['name']))
  return sorted(kernels, key=lambda k: k.start_us)


def kernel_kind(kernel: Kernel, lookup: dict[str, Instruction], module: str) -> str | None:
  """Kind of one kernel: by the program's HLO where the kernel belongs to it, else by name.

  lookup holds the program's instructions under their names and their _key spellings.
  """
  if not kernel.module or kernel.module == module:
    ins = lookup.get(kernel.name) or lookup.get(_key(kernel.name))
    if ins is not None:
      return classify_instruction(ins)
  return classify_name(f'{kernel.name} {kernel.kernel}')


def host_gap_us(kernels: list[Kernel]) -> tuple[float, int]:
  """(time, count) of the gaps between the kernels inside the traced span."""
  gap, gaps, busy_until = 0.0, 0, None
  for k in kernels:
    if busy_until is not None and k.start_us > busy_until:
      gap += k.start_us - busy_until
      gaps += 1
    end = k.start_us + k.dur_us
    busy_until = end if busy_until is None else max(busy_until, end)
  return gap, gaps


def summarise(kernels: list[Kernel], table: dict[str, Instruction], module: str,
              units: int) -> list[dict]:
  """One row per kind, the host gaps and the total: count and ms, in all and per unit."""
  count = dict.fromkeys(KINDS, 0)
  time_us = dict.fromkeys(KINDS, 0.0)
  lookup = {**{_key(name): ins for name, ins in table.items()}, **table}
  leaves = []
  for k in kernels:
    kind = kernel_kind(k, lookup, module)
    if kind is None:
      continue
    count[kind] += 1
    time_us[kind] += k.dur_us
    leaves.append(k)
  gap, gaps = host_gap_us(leaves)
  count[HOST_GAP], time_us[HOST_GAP] = gaps, gap
  total_us = sum(time_us.values())
  count['total'], time_us['total'] = len(leaves), total_us
  return [dict(kind=kind, count=count[kind], time_ms=round(time_us[kind] / 1e3, 4),
               count_per_unit=round(count[kind] / units, 2),
               ms_per_unit=round(time_us[kind] / 1e3 / units, 4),
               share=round(time_us[kind] / total_us, 4) if total_us else 0.0)
          for kind in KINDS + (HOST_GAP, 'total')]


def markdown_table(title: str, unit: str, rows: list[dict]) -> str:
  lines = [f'{title} (per {unit})', '',
           f'| kind | kernels per {unit} | ms per {unit} | share |', '| --- | --- | --- | --- |']
  lines += [f"| {r['kind']} | {r['count_per_unit']:g} | {r['ms_per_unit']:.4g} | "
            f"{100 * r['share']:.1f}% |" for r in rows]
  return '\n'.join(lines)


def module_name(hlo_text: str) -> str:
  found = re.match(r'HloModule ([\w.\-]+)', hlo_text)
  return found.group(1) if found else ''


def traced(log_dir: str, calls: int, run) -> list[Kernel]:
  """Device kernels of `calls` calls of run() (each blocks until its results are ready)."""
  options = jax.profiler.ProfileOptions()
  options.python_tracer_level = 0  # Python frames would flood the trace and its event cap
  with jax.profiler.trace(log_dir, create_perfetto_trace=True, profiler_options=options):
    for _ in range(calls):
      run()
  return device_kernels(load_trace(log_dir))


def profile_train(c, data, calls: int, sequential: bool, log_dir: str):
  """(rows, final states, stage seconds) of the train step as train.train runs it."""
  model = train.create_model(c)
  tx = train.create_optimizer(c, data.num_train)
  states = train.init_states(model, tx, c.seeds)
  chunk = c.train.steps_per_dispatch
  compiled, stages = throughput.staged_compile(
      train.make_train_chunk(c, model, tx, 10**9, chunk, seeds_in_parallel=not sequential),
      states, data)
  box = {'states': states}

  def step():
    box['states'], metrics = compiled(box['states'], data)
    jax.block_until_ready(metrics)
  for _ in range(2):  # warm-up: first-call allocations stay out of the trace
    step()
  kernels = traced(log_dir, calls, step)
  hlo = compiled.as_text()
  return (summarise(kernels, parse_hlo(hlo), module_name(hlo), calls * chunk), box['states'],
          stages)


def profile_scoring(c, data, states, chunks: int, log_dir: str):
  """(rows, archs scored) of scoring.score_archs on whole cosets, seed 0's weights."""
  model = train.create_model(c)
  params, batch_stats = scoring.seed_variables(states, 0)
  allowed = tuple(range(5))
  rng = np.random.default_rng(0)
  bases = space.all_archs()[rng.choice(space.NUM_ARCHS, chunks * c.eval.groups_per_call,
                                       replace=False)]
  bases = np.unique(space.coset_base(bases, allowed), axis=0)
  archs = space.coset_members(bases, allowed).reshape(-1, 6)
  score = lambda a: scoring.score_archs(c, model, params, batch_stats, a, data)
  score(archs[:5 * c.eval.groups_per_call])  # warm-up: compiles the scorer
  kernels = traced(log_dir, 1, lambda: score(archs))
  scorer = throughput.jitted_of(scoring.make_group_scorer(model, c.eval.bn_mode))
  x = jnp.zeros((c.eval.batch_size, 32, 32, 3), jnp.float32)
  paths = jnp.zeros((c.eval.groups_per_call, len(allowed), 6), jnp.int32)
  labels = jnp.zeros((c.eval.batch_size,), jnp.int32)
  hlo = scorer.lower(params, batch_stats, paths, x, labels).compile().as_text()
  return summarise(kernels, parse_hlo(hlo), module_name(hlo), len(archs)), len(archs)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  throughput.add_size_flags(p)
  p.add_argument('--sequential_seeds', action='store_true',
                 help='seeds one after another inside the step (lax.map) instead of vmapped')
  p.add_argument('--train_calls', type=int, default=2, help='traced train dispatches')
  p.add_argument('--score_chunks', type=int, default=2, help='traced chunks of groups')
  p.add_argument('--only', default='train,score')
  p.add_argument('--trace_dir', default='', help='keep the raw traces here (default: removed)')
  p.add_argument('--markdown', default='', help='write the tables here (default: stderr)')
  args = p.parse_args()
  if args.compilation_cache:
    throughput.use_compilation_cache(args.compilation_cache)
  c = throughput.bench_config(args)
  data = throughput.synthetic_data(c)
  base = dict(throughput.device_record(), size=args.size, seeds=args.seeds,
              precision=args.precision, batch_size=args.batch_size,
              steps_per_dispatch=args.steps_per_dispatch,
              seeds_in_parallel=not args.sequential_seeds, scan_cells=args.scan_cells)
  log_root = args.trace_dir or tempfile.mkdtemp(prefix='spos-profile-')
  wanted, tables = set(args.only.split(',')), []
  states = None
  if 'train' in wanted or 'score' in wanted:
    rows, states, stages = profile_train(c, data, args.train_calls, args.sequential_seeds,
                                         os.path.join(log_root, 'train'))
    if 'train' in wanted:
      throughput.emit(dict(base, program='train', kind='compile', **stages))
      for r in rows:
        throughput.emit(dict(base, program='train', unit='optimizer step', **r))
      tables.append(markdown_table(
          f'train, {args.size}, {args.seeds} seed(s) '
          f"{'one after another' if args.sequential_seeds else 'vmapped'}, {args.precision}, "
          f'batch {args.batch_size}', 'optimizer step', rows))
  if 'score' in wanted:
    rows, archs = profile_scoring(c, data, states, args.score_chunks,
                                  os.path.join(log_root, 'score'))
    for r in rows:
      throughput.emit(dict(base, program='score', unit='scored arch', archs=archs,
                           val_images=data.num_val, eval_batch_size=c.eval.batch_size,
                           groups_per_call=c.eval.groups_per_call, **r))
    tables.append(markdown_table(
        f'scoring, {args.size}, {archs} archs on {data.num_val} images, '
        f'{c.eval.groups_per_call} groups x {c.eval.batch_size} images per call',
        'scored arch', rows))
  text = '\n\n'.join(tables) + '\n'
  if args.markdown:
    Path(args.markdown).write_text(text)
  else:
    sys.stderr.write(text)
  if not args.trace_dir:
    shutil.rmtree(log_root, ignore_errors=True)


if __name__ == '__main__':
  main()
