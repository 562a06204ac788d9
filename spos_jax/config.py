"""The run configuration: the study's defaults, validation, and what may change on resume.

Config files under `configs/` start from `base_config()` and change a few fields.
"""
from __future__ import annotations

import math
import re

import ml_collections

from spos_jax import bench, data, sampling, space

PRECISIONS = ('fp32', 'bf16')
NODE_REDUCTIONS = ('sum', 'mean')
AUGMENT_POLICIES = ('standard', 'autoaugment')
DATA_SOURCES = data.SOURCES
DATASETS = tuple(data.DATASETS)
BN_MODES = ('running', 'batch', 'recalibrate')
EVAL_SCOPES = ('groups', 'all', 'unique')
FEWSHOT_OFF = -1  # fewshot.split_edge of a one-shot-only run
METHODS = ('supernet', 'proxies')
# train.shared_layers: how the layers every path uses (train.SHARED_LAYERS) take the
# |O| micro-batch gradients of a strictly fair step.
SHARED_LAYER_MODES = ('sum', 'mean', 'every_micro_step')
SEED_LOOPS = ('vmap', 'unrolled')  # train.seed_loop
UNIFORM_OPS = ('drawn', 'all')  # train.uniform_ops
EVAL_PACKINGS = ('fair_groups', 'single_path')  # eval.packing
PROXY_NAMES = ('synflow', 'jacob_cov', 'snip', 'grad_norm')  # proxies.py computes them

# Keys that do not change what a run computes; a resumed run may differ in them.
RESUMABLE_KEYS = (
    'train.log_every_steps', 'train.checkpoint_every_steps', 'train.keep_checkpoints',
    'train.steps_per_dispatch', 'train.seed_loop', 'train.uniform_ops', 'data.path',
    'data.tfds_data_dir', 'data.cache_dir', 'proxies.archs_per_call', 'eval.', 'bench.',
)


class ConfigError(ValueError):
  """A config value that is out of range, of the wrong type, or unknown."""


def base_config() -> ml_collections.ConfigDict:
  """The study's defaults (docs/method.md): small super-network (C=32, N=2), 250 epochs, 5 seeds."""
  c = ml_collections.ConfigDict()
  # 'supernet': train the super-network, then rank the archs by its accuracy (the
  # paper); 'proxies': rank them by zero-cost proxies at initialisation, no training
  c.method = 'supernet'
  c.seeds = (0, 1, 2, 3, 4)  # every seed trains in parallel (vmapped) in one run

  c.model = ml_collections.ConfigDict()
  c.model.channels = 32  # C of the first stage; 2C and 4C follow
  c.model.cells_per_stage = 2  # N
  c.model.lt_skip = False  # Linear Transformer on skip_connect
  c.model.lt_pool = False  # Linear Transformer after avg_pool_3x3
  c.model.pool_exclude_padding = True  # NB201; the paper's code counted the padding
  c.model.node_reduction = 'sum'  # 'sum' (NB201, paper code) or 'mean' (paper text)
  c.model.scan_cells = False  # one nn.scan over each stage's cells: smaller graph, faster compile

  c.space = ml_collections.ConfigDict()
  c.space.masked_ops = ''  # comma list of ops never sampled, e.g. 'none,avg_pool_3x3'

  c.sampling = ml_collections.ConfigDict()
  c.sampling.method = 'fair'  # 'fair' (strictly fair groups) or 'uniform'
  c.sampling.topology = 'shared'  # 'shared' or 'unshared' (each cell its own path)

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 250
  c.train.batch_size = 256  # one micro-batch; a fair group is |O| of them
  c.train.lr = 0.025
  c.train.lr_min = 1e-5  # cosine end value
  c.train.momentum = 0.9
  c.train.weight_decay = 3e-4  # conv and linear kernels only
  c.train.warmup_epochs = 0.0  # linear warm-up to lr (the paper's variation uses 5)
  c.train.clip_norm = 0.0  # global L2 norm clipping; 0 disables (variation: 5)
  c.train.label_smoothing = 0.0  # variation: 0.1 with AutoAugment
  c.train.augment = 'standard'  # 'standard' crop+flip, or 'autoaugment' (after crop+flip)
  # The stem, reduction blocks, final BN and classifier under strictly fair sampling:
  # 'sum' (the paper) one step on the sum of the |O| micro-batch gradients, as the cell
  # ops; 'mean' the same step on their mean; 'every_micro_step' a step after each
  # micro-batch, the cell ops still once per group on the sum
  c.train.shared_layers = 'sum'  # 'sum' (the paper), 'mean' or 'every_micro_step'
  c.train.precision = 'bf16'  # 'bf16' compute (fp32 params, fp32 BN stats) or 'fp32'
  c.train.steps_per_dispatch = 10  # optimizer steps per jitted call
  # How one program steps the seeds: 'vmap' (together; one after another with lax.map
  # where XLA's estimate is over the memory) or 'unrolled' (each seed's step written out:
  # XLA:CPU runs vmapped convolutions and loops slowly, so the CPU configs unroll)
  c.train.seed_loop = 'vmap'
  # How a uniform step with a seed's own path picks each edge's op: 'drawn' runs the
  # drawn op alone (a conditional), 'all' runs every allowed op and keeps the drawn
  # one's output and BN statistics (the same step: XLA:CPU runs convolutions inside a
  # conditional ~20x slower, so the CPU configs run them all). Vmapped seeds ('vmap')
  # always run them all.
  c.train.uniform_ops = 'drawn'
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 1000
  c.train.keep_checkpoints = 3

  c.data = ml_collections.ConfigDict()
  c.data.dataset = 'cifar10'  # 'cifar10', 'cifar100' or 'imagenet16' (ImageNet16-120, .npz only)
  # 'auto' = 'npz' when data.path is set, else 'download' (the official archive,
  # fetched once into data.cache_dir); 'tfds' (a tfds-prepared copy) or 'synthetic'
  c.data.source = 'auto'
  c.data.path = ''  # a local .npz (x_train, y_train, x_test, y_test); implies source npz
  c.data.cache_dir = ''  # where 'download' keeps <dataset>.npz; '' = ~/.cache/spos_jax
  c.data.tfds_data_dir = ''  # tfds data folder for source=tfds; '' = tfds default
  c.data.split_seed = 0  # study-level: the same 45k/5k split for every run
  c.data.val_size = 5000
  c.data.synthetic_size = 2048  # train images for source=synthetic
  c.data.train_subset = 0  # train on only the first N images of the split; 0 = all

  c.eval = ml_collections.ConfigDict()
  c.eval.bn_mode = 'running'  # 'running' (paper), 'batch', 'recalibrate'
  c.eval.recalibrate_batches = 10  # training batches per arch for bn_mode=recalibrate
  c.eval.batch_size = 1000  # validation images per forward (per arch)
  c.eval.groups_per_call = 8  # fair groups of |O| archs scored per jitted call
  # 'fair_groups' (|O| archs per forward: GPUs) or 'single_path' (one arch per forward:
  # on a CPU a fair group costs |O| single paths, and random archs fill a third of it)
  c.eval.packing = 'fair_groups'
  # 'unique': one arch per isomorphism class of the subset, 6466 in the whole space
  # (bench.unique_classes, space.cell_expression)
  c.eval.scope = 'groups'  # 'groups' (top-N + random, the paper), 'all' (whole subset) or 'unique'
  # The final checkpoint and the newest ones before it at multiples of
  # train.checkpoint_every_steps (checkpoint.averaged_steps), each scored the same way
  c.eval.average_checkpoints = 1  # checkpoints each score is the mean over; 1 = the final one
  c.eval.top_ns = (10, 25, 50, 100, 150, 250, 500)
  c.eval.random_size = 1000
  c.eval.random_seed = 0
  c.eval.name = ''  # results subfolder; '' derives it from bn_mode and scope
  # The ranking trajectory (trajectory.py): every N epochs score a fixed set of archs
  # with the current weights into trajectory.csv; 0 = off. 25 epochs with 200 archs
  # costs about a tenth of a 250-epoch run's training (docs in BUILD.md).
  c.eval.every_epochs = 25
  c.eval.trajectory_size = 200  # archs: a sample of the subset (eval.random_seed); 0 = the run's groups

  c.bench = ml_collections.ConfigDict()
  # 'builtin' = the NB201 table shipped with the package; a table file (csv/csv.gz,
  # e.g. from `python -m spos_jax.bench convert`); '' or 'none' = no ranking
  c.bench.path = bench.BUILTIN
  c.bench.metric = ''  # ranking column; '' = the data set's (cifar10_test, cifar100_test, ...)

  # Few-shot super-networks (Zhao et al. 2021; fewshot.py), trained after the one-shot run.
  c.fewshot = ml_collections.ConfigDict()
  c.fewshot.split_edge = FEWSHOT_OFF  # -1 = off; 0..5: one sub-network per allowed op there
  c.fewshot.epochs = 50  # epochs each sub-network trains from the one-shot weights (own cosine)
  c.fewshot.sub_networks_in_parallel = False  # vmap them: the split edge runs every op (more FLOPs)

  # Zero-cost proxies at initialisation (proxies.py), the job of method='proxies'.
  c.proxies = ml_collections.ConfigDict()
  c.proxies.names = 'synflow,jacob_cov,snip,grad_norm'  # comma list, one results folder each
  c.proxies.batch_size = 64  # training images of the one batch every arch sees (eval.random_seed)
  c.proxies.archs_per_call = 16  # archs per jitted, vmapped call (speed only)
  return c


def proxy_names(config) -> tuple[str, ...]:
  """The zero-cost proxies a method='proxies' run scores, in the order given."""
  return tuple(n.strip() for n in str(config.proxies.names).split(',') if n.strip())


def fewshot_enabled(config) -> bool:
  """Whether the run splits its trained super-network on an edge (fewshot.split_edge).

  ConfigError unless split_edge is an edge index (0..5) or FEWSHOT_OFF: the one rule
  for the field, which validate and fewshot.split_edge both apply.
  """
  _check_int('fewshot.split_edge', config.fewshot.split_edge, FEWSHOT_OFF, space.NUM_EDGES - 1)
  return config.fewshot.split_edge != FEWSHOT_OFF


def bench_metric(config) -> str:
  """The bench column a run ranks by: bench.metric, or the data set's default column."""
  return config.bench.metric or bench.DATASET_METRICS[config.data.dataset]


def data_source(config) -> str:
  """The data source a run reads: data.source with 'auto' resolved."""
  return data.resolved_source(config.data.source, config.data.path)


def resolved(config) -> ml_collections.ConfigDict:
  """A copy with data.source and bench.metric resolved: what a run record should hold."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.data.source = data_source(config)
  out.bench.metric = bench_metric(config)
  return out


def adopt_recorded(config, saved: dict) -> ml_collections.ConfigDict:
  """A copy of `config` where an 'auto' data.source takes the source a run recorded.

  A run recorded before 'auto' existed holds 'tfds' and no path; resuming it under the
  new default must read the same data, not download another copy in another order.
  An explicitly chosen source is kept (and differing_keys then reports a change).
  """
  out = ml_collections.ConfigDict(config.to_dict())
  recorded = data.resolved_source(saved.get('data.source', 'auto'), saved.get('data.path', ''))
  if config.data.source == 'auto' and recorded != 'auto':
    if recorded != 'npz' or config.data.path:
      out.data.source = recorded
  return out


def allowed_ops(config) -> tuple[int, ...]:
  return space.allowed_ops_from_mask(config.space.masked_ops)


def group_size(config) -> int:
  """Micro-batches per optimizer step: |O| for strictly fair sampling, else 1."""
  return len(allowed_ops(config)) if config.sampling.method == 'fair' else 1


def _check_choice(name, value, choices):
  if value not in choices:
    raise ConfigError(f'{name}={value!r} is not one of {", ".join(map(repr, choices))}')


def _check_int(name, value, low, high=None):
  if isinstance(value, bool) or not isinstance(value, int):
    raise ConfigError(f'{name} must be an integer, got {value!r}')
  if value < low or (high is not None and value > high):
    bound = f'>= {low}' if high is None else f'in {low}..{high}'
    raise ConfigError(f'{name} must be {bound}, got {value}')


def _check_float(name, value, low, high=None, low_open=False):
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ConfigError(f'{name} must be a number, got {value!r}')
  if not math.isfinite(value) or (value <= low if low_open else value < low) or (
      high is not None and value > high):
    bound = ('> ' if low_open else '>= ') + str(low) + ('' if high is None else f' and <= {high}')
    raise ConfigError(f'{name} must be {bound}, got {value}')


def _check_folder_name(name, value):
  """'' or a plain folder name: it is joined to a path, which must stay inside the run."""
  if not isinstance(value, str) or (value and not re.fullmatch(r'[A-Za-z0-9_][\w.+=-]*', value,
                                                                re.ASCII)):
    raise ConfigError(f'{name}={value!r} must be a plain folder name (letters, digits, '
                      f"'_', '-', '.', '+', '=', not starting with '.'; no '/'), or '' "
                      f'for the default: it names a folder under WORKDIR/results/')


def _int_tuple(name, value, low) -> tuple[int, ...]:
  """A non-empty tuple/list of integers >= low, else ConfigError."""
  if not isinstance(value, (tuple, list)) or not value or any(
      isinstance(v, bool) or not isinstance(v, int) or v < low for v in value):
    raise ConfigError(f'{name} must be a non-empty tuple of integers >= {low}, got {value!r}')
  return tuple(value)


def _check_data_source(d) -> None:
  """Data set and source agree; a given path is read, and only by the npz route."""
  _check_choice('data.dataset', d.dataset, DATASETS)
  _check_choice('data.source', d.source, DATA_SOURCES)
  if not isinstance(d.path, str):
    raise ConfigError(f'data.path must be a string (a .npz file or empty), got {d.path!r}')
  if d.source == 'npz' and not d.path:
    raise ConfigError('data.source=npz needs data.path=FILE.npz')
  if d.path and d.source not in ('auto', 'npz'):
    raise ConfigError(f"data.path={d.path!r} is read only by data.source='npz' or 'auto', "
                      f'not {d.source!r}; drop one of the two')
  source = data.resolved_source(d.source, d.path)
  if source in ('download', 'tfds') and d.dataset not in data.ARCHIVES:
    raise ConfigError(f'data.dataset={d.dataset!r} loads only from a local .npz: pass '
                      f'data.path=FILE.npz (data.source={d.source!r} covers '
                      f'{", ".join(data.ARCHIVES)})')


def _check_bench(config) -> None:
  """bench.path and bench.metric are strings, and the metric fits the data set."""
  b = config.bench
  if not isinstance(b.path, str):
    raise ConfigError(f'bench.path must be a string ({bench.BUILTIN!r}, a table file, or '
                      f"'' / 'none' for no ranking), got {b.path!r}")
  if not isinstance(b.metric, str):
    raise ConfigError(f"bench.metric must be a column name or '' (the data set's), "
                      f'got {b.metric!r}')
  if b.path == bench.BUILTIN and b.metric and b.metric not in bench.BUILTIN_METRICS:
    raise ConfigError(f'bench.metric={b.metric!r} is not a column of the builtin table; '
                      f"choices: {', '.join(bench.BUILTIN_METRICS)} or '' (the data set's)")
  metric_dataset = bench.metric_dataset(b.metric)
  if metric_dataset is not None and metric_dataset != config.data.dataset:
    matching = ', '.join(bench.dataset_metrics(config.data.dataset))
    raise ConfigError(f'bench.metric={b.metric!r} ranks {metric_dataset} accuracies but '
                      f'data.dataset={config.data.dataset!r}; choose a '
                      f"{config.data.dataset} column ({matching}) or '' for "
                      f'{bench.DATASET_METRICS[config.data.dataset]}')


def _check_shared_layers(config) -> None:
  """train.shared_layers is a mode, and one other than 'sum' has a fair group to act on."""
  mode = config.train.shared_layers
  _check_choice('train.shared_layers', mode, SHARED_LAYER_MODES)
  if mode != 'sum' and config.sampling.method != 'fair':
    raise ConfigError(f"train.shared_layers={mode!r} changes how a strictly fair step's "
                      f'|O| micro-batch gradients reach the shared layers; '
                      f"sampling.method={config.sampling.method!r} steps after every "
                      f"micro-batch already: use train.shared_layers='sum'")
  if mode != 'sum' and config.fewshot.split_edge != FEWSHOT_OFF:
    raise ConfigError(f'train.shared_layers={mode!r} is not implemented for few-shot '
                      f"sub-networks: set fewshot.split_edge=-1 or train.shared_layers='sum'")


def _check_average_checkpoints(config) -> None:
  """eval.average_checkpoints counts checkpoints the run keeps and has."""
  k = config.eval.average_checkpoints
  _check_int('eval.average_checkpoints', k, 1)
  if k > 1 and config.method == 'proxies':
    raise ConfigError(f'eval.average_checkpoints={k}: method=proxies scores archs at '
                      'initialisation, without checkpoints; set it to 1')
  if k > config.train.keep_checkpoints:
    raise ConfigError(f'eval.average_checkpoints={k} averages {k} checkpoints, but the run '
                      f'keeps train.keep_checkpoints={config.train.keep_checkpoints}; keep '
                      f'at least {k}')


def validate(config) -> None:
  """Raise ConfigError naming the first bad field; returns None when all is well."""
  if not isinstance(config.space.masked_ops, str):
    raise ConfigError(f'space.masked_ops must be a comma-separated string of op names, '
                      f'got {config.space.masked_ops!r}')
  try:
    allowed_ops(config)
  except space.ArchError as e:
    raise ConfigError(f'space.masked_ops: {e}') from None
  seeds = _int_tuple('seeds', config.seeds, 0)
  if len(set(seeds)) != len(seeds):
    raise ConfigError(f'seeds must be distinct, got {seeds}')
  m, t, d, e = config.model, config.train, config.data, config.eval
  _check_int('model.channels', m.channels, 1)
  _check_int('model.cells_per_stage', m.cells_per_stage, 1)
  _check_choice('model.node_reduction', m.node_reduction, NODE_REDUCTIONS)
  _check_choice('sampling.method', config.sampling.method, sampling.METHODS)
  _check_choice('sampling.topology', config.sampling.topology, sampling.TOPOLOGIES)
  _check_int('train.epochs', t.epochs, 1)
  _check_int('train.batch_size', t.batch_size, 1)
  _check_float('train.lr', t.lr, 0, low_open=True)
  _check_float('train.lr_min', t.lr_min, 0, t.lr)
  _check_float('train.momentum', t.momentum, 0, 1)
  _check_float('train.weight_decay', t.weight_decay, 0)
  _check_float('train.warmup_epochs', t.warmup_epochs, 0)
  if t.warmup_epochs >= t.epochs:
    raise ConfigError(f'train.warmup_epochs={t.warmup_epochs} must be below '
                      f'train.epochs={t.epochs}')
  _check_float('train.clip_norm', t.clip_norm, 0)
  _check_float('train.label_smoothing', t.label_smoothing, 0, 1)
  _check_choice('train.augment', t.augment, AUGMENT_POLICIES)
  _check_shared_layers(config)
  _check_choice('train.precision', t.precision, PRECISIONS)
  _check_int('train.steps_per_dispatch', t.steps_per_dispatch, 1)
  _check_choice('train.seed_loop', t.seed_loop, SEED_LOOPS)
  _check_choice('train.uniform_ops', t.uniform_ops, UNIFORM_OPS)
  _check_int('train.log_every_steps', t.log_every_steps, 1)
  _check_int('train.checkpoint_every_steps', t.checkpoint_every_steps, 1)
  _check_int('train.keep_checkpoints', t.keep_checkpoints, 1)
  _check_data_source(d)
  _check_bench(config)
  _check_int('data.split_seed', d.split_seed, 0)
  _check_int('data.val_size', d.val_size, 1)
  _check_int('data.synthetic_size', d.synthetic_size, 1)
  _check_int('data.train_subset', d.train_subset, 0)
  _check_choice('eval.bn_mode', e.bn_mode, BN_MODES)
  _check_int('eval.recalibrate_batches', e.recalibrate_batches, 1)
  _check_int('eval.batch_size', e.batch_size, 1)
  _check_int('eval.groups_per_call', e.groups_per_call, 1)
  _check_choice('eval.packing', e.packing, EVAL_PACKINGS)
  _check_choice('eval.scope', e.scope, EVAL_SCOPES)
  _check_average_checkpoints(config)
  top_ns = _int_tuple('eval.top_ns', e.top_ns, 1)
  if list(top_ns) != sorted(set(top_ns)):
    raise ConfigError(f'eval.top_ns must be strictly increasing, got {top_ns}')
  _check_int('eval.random_size', e.random_size, 1)
  _check_int('eval.random_seed', e.random_seed, 0)
  _check_folder_name('eval.name', e.name)
  _check_int('eval.every_epochs', e.every_epochs, 0)
  _check_int('eval.trajectory_size', e.trajectory_size, 0)
  _check_choice('method', config.method, METHODS)
  names = proxy_names(config)
  unknown = [n for n in names if n not in PROXY_NAMES]
  if unknown or not names:
    raise ConfigError(f'proxies.names={config.proxies.names!r}: give a comma list of '
                      f'{", ".join(PROXY_NAMES)}')
  _check_int('proxies.batch_size', config.proxies.batch_size, 2)
  _check_int('proxies.archs_per_call', config.proxies.archs_per_call, 1)
  if fewshot_enabled(config) and config.method == 'proxies':  # checks fewshot.split_edge
    raise ConfigError('method=proxies scores archs at initialisation: it trains no '
                      'super-network to split; set fewshot.split_edge=-1')
  _check_int('fewshot.epochs', config.fewshot.epochs, 1)
  # fewshot.sub_networks_in_parallel: a bool, which the locked ConfigDict enforces


def flatten(config) -> dict:
  """{'train.lr': 0.025, ...} for comparison and logging."""
  out = {}

  def walk(prefix, node):
    for key, value in node.items():
      name = f'{prefix}{key}'
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(name + '.', value)
      else:
        out[name] = list(value) if isinstance(value, tuple) else value
  walk('', config.to_dict() if hasattr(config, 'to_dict') else config)
  return out


def is_resumable_key(key: str) -> bool:
  """Whether a flattened key is one of RESUMABLE_KEYS (an entry ending in '.' is a group)."""
  return any(key == r or (r.endswith('.') and key.startswith(r)) for r in RESUMABLE_KEYS)


def differing_keys(saved: dict, current: dict) -> list[str]:
  """Flattened keys whose values differ between two configs, ignoring RESUMABLE_KEYS.

  A key that `saved` lacks (a run recorded before the key existed) holds its
  default: new keys default to what runs computed before them.
  """
  saved = _with_resolved_source({**flatten(base_config()), **saved})
  current = _with_resolved_source(current)
  keys = sorted(set(saved) | set(current))
  return [k for k in keys
          if not is_resumable_key(k) and saved.get(k, '<missing>') != current.get(k, '<missing>')]


def _with_resolved_source(flat: dict) -> dict:
  """'auto' stands for the source it resolves to, so 'auto' and 'npz' with a path agree."""
  if isinstance(flat.get('data.source'), str) and isinstance(flat.get('data.path', ''), str):
    flat = {**flat, 'data.source': data.resolved_source(flat['data.source'],
                                                         flat.get('data.path', ''))}
  return flat


def set_flat(config, key: str, value) -> None:
  """config['a.b.c'] = value, with lists turned back into tuples; unknown keys fail."""
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    if part not in node:
      raise ConfigError(f'unknown config key {key!r}')
    node = node[part]
  if leaf not in node:
    raise ConfigError(f'unknown config key {key!r}')
  try:
    node[leaf] = tuple(value) if isinstance(value, list) else value
  except TypeError as e:
    raise ConfigError(f'{key}: {e}') from None


def from_flat(flat: dict) -> ml_collections.ConfigDict:
  """Rebuild a config from `flatten` output (e.g. a run's config.json)."""
  config = base_config()
  for key, value in flat.items():
    set_flat(config, key, value)
  return config
