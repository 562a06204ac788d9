"""NAS-Bench-201 ground truth: the bench table, arch groups, op usage, converters.

A bench table is a CSV file (plain or gzip) with a header: `index` (official NB201
index), `arch` (NB201 arch string) and one numeric column per metric (accuracies in
percent, 0..100, higher is better). An optional `dead` column (0/1) is checked against
`space.is_dead` and is not a metric. See docs/method.md, 'Ground truth', 'Evaluation groups'
and 'Metrics'.

The package ships the compact NB201 table (`spos_jax/nb201/nb201_table.csv.gz`, its
sources in `spos_jax/nb201/PROVENANCE.md`); the path value 'builtin' names it.

  python -m spos_jax.bench usage [--bench=builtin|FILE] --mask=none,avg_pool_3x3 [--mask=...]
      [--metric=cifar10_test] [--top_ns=10,25,50,100,150,250,500] [--out=usage.csv]
  python -m spos_jax.bench convert --source=nb201|nats --file=PATH --out=table.csv[.gz]
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import hashlib
import inspect
import io
import os
import sys
import zlib
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from spos_jax import space

INDEX_COLUMN = 'index'
ARCH_COLUMN = 'arch'
DEAD_COLUMN = 'dead'
DEFAULT_METRIC = 'cifar10_test'
DEFAULT_TOP_NS = (10, 25, 50, 100, 150, 250, 500)
DEFAULT_RANDOM_SIZE = 1000
GZIP_MAGIC = b'\x1f\x8b'
USAGE_CSV_COLUMNS = ('mask', 'top_n', 'op', 'usage', 'share')
ACCURACY_RANGE = (0.0, 100.0)  # metric columns are accuracies in percent
# The path value naming the packaged table, and the values that turn ranking off.
BUILTIN = 'builtin'
NO_BENCH = ('', 'none')
BUILTIN_TABLE = Path(__file__).resolve().parent / 'nb201' / 'nb201_table.csv.gz'
# The metric columns of the builtin table (tests/test_bench.py checks them).
BUILTIN_METRICS = (
    'cifar10_test', 'cifar100_test', 'imagenet16_test', 'cifar10_valid_12ep',
    'cifar10_test_12ep', 'cifar100_valid_12ep', 'cifar100_test_12ep',
    'imagenet16_valid_12ep', 'imagenet16_test_12ep')
# The column a data set's run ranks by unless bench.metric names another.
DATASET_METRICS = {'cifar10': 'cifar10_test', 'cifar100': 'cifar100_test',
                   'imagenet16': 'imagenet16_test'}


class BenchError(ValueError):
  """A bench table that cannot be read, or a query the bench cannot answer."""


# ---------------------------------------------------------------------------
# The table


def _read_only(array: np.ndarray) -> np.ndarray:
  array.setflags(write=False)
  return array


@dataclasses.dataclass(frozen=True, eq=False)
class Bench:
  """Ground truth of a set of archs, one row per arch (rows in file order).

  `path` and `sha256` name the file the rows came from (a subset keeps them).
  """
  path: str
  sha256: str
  archs: np.ndarray  # int32 [n, 6], op indices in space.OPS order
  indices: np.ndarray  # int64 [n], official NB201 index
  arch_strings: np.ndarray  # str [n], NB201 arch strings
  metrics: dict[str, np.ndarray]  # name -> float64 [n], in file column order
  # A bench of isomorphism classes (`unique_classes`): each row's class id
  # (space.isomorphism_class) and how many archs of the subset it stands for.
  class_ids: np.ndarray | None = None  # int64 [n]
  class_sizes: np.ndarray | None = None  # int64 [n]

  def __len__(self) -> int:
    return len(self.indices)

  @property
  def metric_names(self) -> tuple[str, ...]:
    return tuple(self.metrics)

  @property
  def dead(self) -> np.ndarray:
    """True where the arch has no non-'none' path from input to output."""
    return space.is_dead(self.archs)

  def metric(self, name: str) -> np.ndarray:
    """Values of one metric column; BenchError listing the columns for an unknown name."""
    if name not in self.metrics:
      raise BenchError(f'{self.path}: no metric column {name!r}; available: '
                       f'{", ".join(self.metric_names)}')
    return self.metrics[name]


def _make_bench(path: str, sha256: str, archs, indices, arch_strings, metrics,
                class_ids=None, class_sizes=None) -> Bench:
  optional = lambda a: None if a is None else _read_only(np.asarray(a, np.int64))
  return Bench(
      path=path, sha256=sha256,
      archs=_read_only(np.asarray(archs, np.int32).reshape(-1, space.NUM_EDGES)),
      indices=_read_only(np.asarray(indices, np.int64)),
      arch_strings=_read_only(np.asarray(arch_strings, str)),
      metrics={k: _read_only(np.asarray(v, np.float64)) for k, v in metrics.items()},
      class_ids=optional(class_ids), class_sizes=optional(class_sizes))


def take_rows(bench: Bench, rows: np.ndarray) -> Bench:
  """The bench restricted to the given row positions, in that order."""
  rows = np.asarray(rows, np.int64)
  take = lambda a: None if a is None else a[rows]
  return _make_bench(bench.path, bench.sha256, bench.archs[rows], bench.indices[rows],
                     bench.arch_strings[rows],
                     {k: v[rows] for k, v in bench.metrics.items()},
                     take(bench.class_ids), take(bench.class_sizes))


# ---------------------------------------------------------------------------
# Which table and column


def metric_dataset(metric: str) -> str | None:
  """The data set a column's accuracies are of ('cifar100_test' -> 'cifar100'); None
  for a column named after no known data set (a user's own)."""
  prefix = metric.split('_', 1)[0]
  return prefix if prefix in DATASET_METRICS else None


def dataset_metrics(dataset: str) -> tuple[str, ...]:
  """The builtin table's and the converter's columns of one data set."""
  names = BUILTIN_METRICS + tuple(c.name for c in API_COLUMNS)
  return tuple(n for n in dict.fromkeys(names) if metric_dataset(n) == dataset)


def resolve_path(value: str) -> str | None:
  """The bench file a bench.path value names: 'builtin' -> the packaged table,
  '' or 'none' -> None (no ranking), anything else -> that path."""
  if not isinstance(value, (str, os.PathLike)):
    raise BenchError(f'bench.path={value!r} must be a string: {BUILTIN!r}, a table '
                     "file, or '' / 'none' for no ranking")
  value = os.fspath(value)
  if value.strip().lower() in NO_BENCH:
    return None
  if value == BUILTIN:
    return str(BUILTIN_TABLE)
  return value


def check_path(value: str) -> str | None:
  """resolve_path, then BenchError in one line unless the file exists and can be read.

  Cheap (no table is parsed): for refusing a bad bench.path before any training.
  """
  path = resolve_path(value)
  if path is None:
    return None
  _check_file(Path(path), value)
  return path


def _check_file(path: Path, value=None) -> None:
  named = f'bench.path={value!r}' if value is not None else str(path)
  if path.is_dir():
    raise BenchError(f'{named} is a directory, not a bench table file (.csv or .csv.gz); '
                     f"give the table's file, {BUILTIN!r} or 'none'")
  if not path.is_file():
    raise BenchError(f'{named}: no such bench file; give an existing table (.csv or '
                     f".csv.gz), {BUILTIN!r} for the packaged NB201 table or 'none'")
  if not os.access(path, os.R_OK):
    raise BenchError(f'{named}: bench file is not readable (permission denied)')


# ---------------------------------------------------------------------------
# Reading a table


def _where(path: Path, line: int, column: str | None = None) -> str:
  return f'{path}, line {line}' + (f', column {column!r}' if column else '')


def _file_text(path: Path) -> tuple[str, str]:
  """(decoded text, sha256 of the file bytes); gzip is recognised by its magic bytes."""
  _check_file(path)
  try:
    raw = path.read_bytes()
  except OSError as e:
    raise BenchError(f'{path}: cannot read the bench file ({e.strerror or e})') from e
  sha256 = hashlib.sha256(raw).hexdigest()
  data = raw
  if raw[:2] == GZIP_MAGIC:
    try:
      data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      raise BenchError(f'{path}: corrupt or truncated gzip data ({e})') from e
  try:
    return data.decode('utf-8-sig'), sha256  # -sig: Excel writes a byte-order mark
  except UnicodeDecodeError as e:
    raise BenchError(f'{path}: not a UTF-8 text table ({e})') from e


def _records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
  """(line number, fields) of each non-blank CSV record."""
  reader = csv.reader(io.StringIO(text))
  try:
    for fields in reader:
      if fields and any(f.strip() for f in fields):
        yield reader.line_num, [f.strip() for f in fields]
  except csv.Error as e:
    raise BenchError(f'{_where(path, reader.line_num)}: malformed CSV ({e})') from e


HEADER_HINT = (f"a bench table's first line names its columns: {INDEX_COLUMN!r}, "
               f"{ARCH_COLUMN!r}, one column per metric and optionally {DEAD_COLUMN!r}, "
               'e.g. index,arch,cifar10_test')


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def _check_header(path: Path, line: int, header: list[str]) -> list[str]:
  """Metric column names of a header; BenchError for missing or repeated columns."""
  if any(_is_number(name) or name.startswith('|') for name in header):
    raise BenchError(f'{_where(path, line)}: the header is missing (this line holds '
                     f'data: {",".join(header)[:60]!r}); {HEADER_HINT}')
  seen = set()
  for name in header:
    if not name:
      raise BenchError(f'{_where(path, line)}: empty column name in header')
    if name in seen:
      raise BenchError(f'{_where(path, line)}: column {name!r} appears twice in header')
    seen.add(name)
  for required in (INDEX_COLUMN, ARCH_COLUMN):
    if required not in seen:
      raise BenchError(f'{_where(path, line)}: header has no {required!r} column '
                       f'(found: {", ".join(header)}); {HEADER_HINT}')
  metrics = [n for n in header if n not in (INDEX_COLUMN, ARCH_COLUMN, DEAD_COLUMN)]
  if not metrics:
    raise BenchError(f'{_where(path, line)}: header has no metric column besides '
                     f'{INDEX_COLUMN!r}, {ARCH_COLUMN!r}')
  return metrics


def _parse_index(path: Path, line: int, text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = -1
  if value < 0:
    raise BenchError(f'{_where(path, line, INDEX_COLUMN)}: {text!r} is not a '
                     'non-negative integer NB201 index')
  return value


def _parse_arch(path: Path, line: int, text: str) -> np.ndarray:
  try:
    return space.string_to_arch(text)
  except space.ArchError as e:
    raise BenchError(f'{_where(path, line, ARCH_COLUMN)}: invalid arch: {e}') from e


def _parse_metric(path: Path, line: int, column: str, text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise BenchError(f'{_where(path, line, column)}: cannot read {text!r} as a '
                     'number') from None
  if not np.isfinite(value):
    raise BenchError(f'{_where(path, line, column)}: {text!r} is not a finite number')
  low, high = ACCURACY_RANGE
  if not low <= value <= high:
    raise BenchError(f'{_where(path, line, column)}: {text!r} is outside {low:g}..{high:g}; '
                     'metric columns are accuracies in percent')
  return value


def _parse_dead_flag(path: Path, line: int, text: str) -> bool:
  if text not in ('0', '1'):
    raise BenchError(f'{_where(path, line, DEAD_COLUMN)}: {text!r} is not 0 or 1')
  return text == '1'


def _check_dead_flags(path: Path, flags: Sequence[bool], archs: np.ndarray,
                      lines: Sequence[int]) -> None:
  """BenchError at the first row whose dead flag disagrees with space.is_dead."""
  wrong = np.flatnonzero(np.asarray(flags, bool) != space.is_dead(archs))
  if wrong.size:
    row = wrong[0]
    raise BenchError(f'{_where(path, lines[row], DEAD_COLUMN)}: says {int(flags[row])} '
                     f'but the arch is {"alive" if flags[row] else "dead"} '
                     '(space.is_dead)')


def _first_seen(path: Path, column: str, keys: Iterable, lines: Sequence[int]) -> None:
  """BenchError naming the first key that repeats an earlier one."""
  first_line = {}
  for key, line in zip(keys, lines):
    if key in first_line:
      raise BenchError(f'{_where(path, line, column)}: duplicate {column} {key!r} '
                       f'(first at line {first_line[key]})')
    first_line[key] = line


def load_bench(path: str | os.PathLike, expect_full: bool = True) -> Bench:
  """Read and validate a bench table; a full NB201 table must hold all 15625 archs.

  `path` may be 'builtin', the packaged table.
  """
  path = BUILTIN_TABLE if os.fspath(path) == BUILTIN else Path(path)
  text, sha256 = _file_text(path)
  records = _records(path, text)
  try:
    header_line, header = next(records)
  except StopIteration:
    raise BenchError(f'{path}: empty file; expected a header with {INDEX_COLUMN!r}, '
                     f'{ARCH_COLUMN!r} and metric columns') from None
  metric_names = _check_header(path, header_line, header)
  col = {name: i for i, name in enumerate(header)}
  lines, indices, archs, strings, dead_flags = [], [], [], [], []
  values = {name: [] for name in metric_names}
  for line, fields in records:
    if len(fields) != len(header):
      raise BenchError(f'{_where(path, line)}: expected {len(header)} fields '
                       f'({",".join(header)}), found {len(fields)}: truncated or '
                       'malformed row')
    arch = _parse_arch(path, line, fields[col[ARCH_COLUMN]])
    if DEAD_COLUMN in col:
      dead_flags.append(_parse_dead_flag(path, line, fields[col[DEAD_COLUMN]]))
    for name in metric_names:
      values[name].append(_parse_metric(path, line, name, fields[col[name]]))
    lines.append(line)
    indices.append(_parse_index(path, line, fields[col[INDEX_COLUMN]]))
    archs.append(arch)
    strings.append(space.arch_to_string(arch))
  if not lines:
    raise BenchError(f'{path}: no data rows after the header')
  if DEAD_COLUMN in col:
    _check_dead_flags(path, dead_flags, np.stack(archs), lines)
  _first_seen(path, ARCH_COLUMN, strings, lines)
  _first_seen(path, INDEX_COLUMN, indices, lines)
  if expect_full and len(lines) != space.NUM_ARCHS:
    raise BenchError(_partial_table_message(path, np.stack(archs)))
  return _make_bench(str(path), sha256, archs, indices, strings, values)


def _partial_table_message(path: Path, archs: np.ndarray) -> str:
  """What a table that lacks archs misses, and what to do about it."""
  present = np.zeros(space.NUM_ARCHS, bool)
  present[space.arch_code(archs)] = True
  missing = np.flatnonzero(~present)
  first = space.arch_to_string(space.all_archs()[missing[0]])
  return (f'{path}: holds {len(archs)} of the {space.NUM_ARCHS} NB201 archs '
          f'({len(missing)} missing, e.g. {first}); ranking needs every arch: use the '
          f"full table (bench.path={BUILTIN!r}, or one written by `python -m "
          "spos_jax.bench convert`)")


# ---------------------------------------------------------------------------
# Subsets and groups (docs/method.md, 'Masked subsets', 'Evaluation groups')


def restrict(bench: Bench, allowed_ops: Sequence[int]) -> Bench:
  """The archs that use only allowed ops (e.g. space.allowed_ops_from_mask('none'))."""
  allowed = tuple(int(op) for op in allowed_ops)
  if not allowed or any(not 0 <= op < space.NUM_OPS for op in allowed):
    raise BenchError(f'allowed ops must be op indices in 0..{space.NUM_OPS - 1}, '
                     f'got {allowed}')
  return take_rows(bench, np.flatnonzero(space.uses_only(bench.archs, allowed)))


def unique_classes(bench: Bench) -> Bench:
  """One row per isomorphism class of the bench's archs (space.isomorphism_class).

  The rule: a class is represented by its member with the lowest NB201 index, and
  every metric of the row is the mean over the class's members in this bench
  (isomorphic cells compute the same function; their bench accuracies differ only by
  training noise). Rows stay in the bench's order of the representatives; class_ids
  and class_sizes (members in this bench) are filled. Restrict first: the classes of
  a masked subset hold only its archs.
  """
  if bench.class_ids is not None:
    raise BenchError(f'{bench.path}: the bench holds isomorphism classes already')
  classes = space.isomorphism_class(bench.archs)
  ids, inverse, sizes = np.unique(classes, return_inverse=True, return_counts=True)
  inverse = inverse.reshape(-1)
  by_class = np.lexsort((bench.indices, inverse))  # each class's lowest index first
  representatives = by_class[np.concatenate([[0], np.cumsum(sizes)[:-1]])]
  order = np.argsort(representatives)
  rows = representatives[order]
  means = {k: (np.bincount(inverse, weights=v, minlength=len(ids)) / sizes)[order]
           for k, v in bench.metrics.items()}
  return _make_bench(bench.path, bench.sha256, bench.archs[rows], bench.indices[rows],
                     bench.arch_strings[rows], means, ids[order], sizes[order])


def ranked_subset(bench: Bench, allowed_ops: Sequence[int], unique: bool = False) -> Bench:
  """What a run ranks: the archs of the allowed ops, or their isomorphism classes."""
  subset = restrict(bench, allowed_ops)
  return unique_classes(subset) if unique else subset


def ranking(bench: Bench, metric: str) -> np.ndarray:
  """All row positions, best metric first; ties broken by the lower NB201 index."""
  return np.lexsort((bench.indices, -bench.metric(metric)))


def top_n(bench: Bench, metric: str, n: int) -> np.ndarray:
  """Row positions of the n best archs by metric, best first (all rows when n > len)."""
  if n < 1:
    raise BenchError(f'top_n needs n >= 1, got {n}')
  return ranking(bench, metric)[:n]


def random_sample(bench: Bench, size: int, seed: int) -> np.ndarray:
  """`size` row positions drawn without replacement, sorted; all rows if fewer.

  Draws over rows in NB201-index order, so the sample depends on the set of archs
  and the seed, not on the row order of the file.
  """
  if size < 1:
    raise BenchError(f'random_sample needs size >= 1, got {size}')
  if len(bench) <= size:
    return np.arange(len(bench))
  by_index = np.argsort(bench.indices, kind='stable')
  picked = np.random.default_rng(seed).choice(len(bench), size=size, replace=False)
  return np.sort(by_index[picked])


def arch_groups(bench: Bench, metric: str, top_ns: Sequence[int] = DEFAULT_TOP_NS,
                random_size: int = DEFAULT_RANDOM_SIZE,
                random_seed: int = 0) -> dict[str, np.ndarray]:
  """Row positions of 'top10', 'top25', ..., 'random' and 'all'.

  docs/method.md, 'Evaluation groups'.
  """
  order = ranking(bench, metric)
  groups = {f'top{n}': order[:n] for n in top_ns}
  groups['random'] = random_sample(bench, random_size, random_seed)
  groups['all'] = np.arange(len(bench))
  return groups


def rows_for_archs(bench: Bench, archs: np.ndarray) -> np.ndarray:
  """Row position of each arch of [m, 6]; BenchError naming the first one missing."""
  archs = np.asarray(archs)
  if (archs.ndim != 2 or archs.shape[1] != space.NUM_EDGES
      or not np.issubdtype(archs.dtype, np.integer)):
    raise BenchError(f'archs must be an integer array [m, {space.NUM_EDGES}], got '
                     f'shape {archs.shape} of {archs.dtype}')
  if archs.size and (archs.min() < 0 or archs.max() >= space.NUM_OPS):
    raise BenchError(f'op indices must lie in 0..{space.NUM_OPS - 1}')
  lookup = np.full(space.NUM_ARCHS, -1, np.int64)
  lookup[space.arch_code(bench.archs)] = np.arange(len(bench))
  rows = lookup[space.arch_code(archs)]
  missing = np.flatnonzero(rows < 0)
  if missing.size:
    raise BenchError(f'arch {space.arch_to_string(archs[missing[0]])} (row '
                     f'{missing[0]} of {len(archs)}) is not in bench {bench.path} '
                     f'({len(bench)} archs); {missing.size} missing in all')
  return rows


# ---------------------------------------------------------------------------
# Operation usage (paper Fig. 3; docs/method.md, 'Metrics')


def op_usage(archs: np.ndarray) -> dict[str, dict[str, float]]:
  """{'usage': {op: ...}, 'share': {op: ...}} over archs [n, 6], for all 5 ops.

  usage(op) = fraction of archs holding op at least once; share(op) = occurrences of
  op / (6 n), so the shares sum to 1.
  """
  archs = np.asarray(archs)
  if archs.ndim != 2 or archs.shape[1] != space.NUM_EDGES or len(archs) == 0:
    raise BenchError(f'op_usage needs archs [n >= 1, {space.NUM_EDGES}], got shape '
                     f'{archs.shape}')
  holds = archs[:, :, None] == np.arange(space.NUM_OPS)  # [n, 6, ops]
  usage = holds.any(axis=1).mean(axis=0)
  share = holds.mean(axis=(0, 1))
  return {'usage': dict(zip(space.OPS, usage.tolist())),
          'share': dict(zip(space.OPS, share.tolist()))}


def mask_label(masked: Sequence[int]) -> str:
  """'none+avg_pool_3x3' for masked op indices; 'all_ops' when nothing is masked."""
  return '+'.join(space.OPS[i] for i in masked) or 'all_ops'


def usage_rows(bench: Bench, masked: Sequence[int], metric: str = DEFAULT_METRIC,
               top_ns: Sequence[int] = DEFAULT_TOP_NS) -> list[dict]:
  """Rows (mask, top_n, op, usage, share) for each top-N and 'all' of a masked subset."""
  subset = restrict(bench, space.allowed_ops_from_mask(space.OPS[i] for i in masked))
  order = ranking(subset, metric)
  groups = [(str(n), order[:n]) for n in top_ns] + [('all', order)]
  rows = []
  for name, positions in groups:
    stats = op_usage(subset.archs[positions])
    rows += [{'mask': mask_label(masked), 'top_n': name, 'op': op,
              'usage': stats['usage'][op], 'share': stats['share'][op]}
             for op in space.OPS]
  return rows


def format_usage(rows: Sequence[dict]) -> str:
  """A readable table: one block per mask, one line per top-N, 'usage (share)' per op."""
  width = max(len(op) for op in space.OPS) + 2
  lines = []
  for mask in dict.fromkeys(r['mask'] for r in rows):
    lines += ['', f'mask {mask}: usage (share) per op',
              'top_n ' + ''.join(op.rjust(width) for op in space.OPS)]
    by_group = {}
    for r in rows:
      if r['mask'] == mask:
        by_group.setdefault(r['top_n'], {})[r['op']] = r
    for group, cells in by_group.items():
      lines.append(group.ljust(6) + ''.join(
          f'{cells[op]["usage"]:.2f} ({cells[op]["share"]:.2f})'.rjust(width)
          for op in space.OPS))
  return '\n'.join(lines[1:])


def write_usage_csv(path: str | os.PathLike, rows: Sequence[dict]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=USAGE_CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


# ---------------------------------------------------------------------------
# Converting the official NAS-Bench-201 / NATS-Bench files


class ApiColumn(NamedTuple):
  """One converted column: get_more_info(dataset, hp=200, seed mean)[key], epoch mean."""
  name: str
  dataset: str
  key: str
  epochs: tuple  # iepoch values averaged; None = the final epoch (199)


API_COLUMNS = (
    ApiColumn('cifar10_valid', 'cifar10-valid', 'valid-accuracy', (None,)),
    ApiColumn('cifar10_valid_avg197_199', 'cifar10-valid', 'valid-accuracy',
              (197, 198, 199)),
    ApiColumn('cifar10_test', 'cifar10', 'test-accuracy', (None,)),
    ApiColumn('cifar100_test', 'cifar100', 'test-accuracy', (None,)),
    ApiColumn('imagenet16_test', 'ImageNet16-120', 'test-accuracy', (None,)),
)


def _schedule_kwargs(api) -> dict:
  """get_more_info's 200-epoch switch: hp='200' (API >= 2.0) or use_12epochs_result=False."""
  params = inspect.signature(api.get_more_info).parameters
  return {'hp': '200'} if 'hp' in params else {'use_12epochs_result': False}


def api_value(api, index: int, column: ApiColumn, schedule: dict) -> float:
  """Seed-mean (is_random=False) value of a column, averaged over its epochs."""
  values = []
  for epoch in column.epochs:
    try:
      info = api.get_more_info(index, column.dataset, iepoch=epoch, is_random=False,
                               **schedule)
      values.append(float(info[column.key]))
    except (KeyError, ValueError, AssertionError, IndexError, TypeError) as e:
      raise BenchError(f'the API gives no {column.key!r} for arch {index} on '
                       f'{column.dataset!r} at iepoch={epoch} (200 epochs): '
                       f'{type(e).__name__}: {e}') from e
  return float(np.mean(values))


def table_from_api(api, columns: Sequence[ApiColumn] = API_COLUMNS) -> dict[str, list]:
  """Columns index, arch, metrics..., dead of every arch of an NB201 / NATS-tss API."""
  schedule = _schedule_kwargs(api)
  strings = [api.meta_archs[i] for i in range(len(api))]
  table = {INDEX_COLUMN: list(range(len(strings))), ARCH_COLUMN: strings}
  for column in columns:
    table[column.name] = [api_value(api, i, column, schedule) for i in range(len(strings))]
  archs = np.stack([space.string_to_arch(s) for s in strings])
  table[DEAD_COLUMN] = space.is_dead(archs).astype(int).tolist()
  return table


def _cell(value) -> str:
  if isinstance(value, (float, np.floating)):
    return repr(float(value))
  return str(value)


def write_table(path: str | os.PathLike, table: dict[str, Sequence]) -> None:
  """Write columns as CSV; gzip (with a fixed mtime, so the bytes repeat) for '.gz'."""
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(table)
  writer.writerows(zip(*([_cell(v) for v in col] for col in table.values())))
  data = text.getvalue().encode('utf-8')
  if str(path).endswith('.gz'):
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode='wb', mtime=0) as f:
      f.write(data)
    data = buffer.getvalue()
  Path(path).write_bytes(data)


def open_api(source: str, file: str):
  """The official API object for a benchmark file; the packages are imported here only."""
  if not os.path.exists(file):
    raise BenchError(f'{file}: no such benchmark file or directory')
  if source == 'nb201':
    try:
      from nas_201_api import NASBench201API  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise BenchError(f'cannot import nas_201_api ({e}); pip install nas-bench-201 '
                       '(it also needs torch to read the .pth file)') from e
    return NASBench201API(file, verbose=False)
  if source == 'nats':
    try:
      import nats_bench  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise BenchError(f'cannot import nats_bench ({e}); pip install nats_bench') from e
    # fast_mode reads the per-arch archive directory (NATS-tss-v1_0-3ffb9-simple);
    # the API accepts a single .pickle.pbz2 file only with fast_mode=False.
    return nats_bench.create(file, 'tss', fast_mode=os.path.isdir(file), verbose=False)
  raise BenchError(f'unknown source {source!r}; use nb201 or nats')


# ---------------------------------------------------------------------------
# Command line


def _int_list(text: str) -> tuple[int, ...]:
  try:
    values = tuple(int(s) for s in text.split(',') if s.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not a comma-separated int list') from None
  if not values or min(values) < 1:
    raise argparse.ArgumentTypeError(f'{text!r}: give positive group sizes')
  return values


def run_usage(args: argparse.Namespace) -> None:
  path = check_path(args.bench)
  if path is None:
    raise BenchError(f'--bench={args.bench!r}: usage needs a bench table; give a file '
                     f'or {BUILTIN!r}')
  bench = load_bench(path)
  rows = []
  for mask in args.mask or ['']:
    rows += usage_rows(bench, space.parse_op_list(mask), args.metric, args.top_ns)
  print(f'{bench.path} (sha256 {bench.sha256[:12]}), ranked by {args.metric}')
  print(format_usage(rows))
  if args.out:
    write_usage_csv(args.out, rows)
    print(f'wrote {len(rows)} rows to {args.out}')


def run_convert(args: argparse.Namespace) -> None:
  table = table_from_api(open_api(args.source, args.file))
  write_table(args.out, table)
  bench = load_bench(args.out, expect_full=False)
  print(f'wrote {len(bench)} archs, metrics {", ".join(bench.metric_names)} to '
        f'{bench.path} (sha256 {bench.sha256})')
  if len(bench) != space.NUM_ARCHS:
    print(f'warning: {len(bench)} archs, a full NB201 table has {space.NUM_ARCHS}')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m spos_jax.bench', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  usage = commands.add_parser('usage', help='op usage/share of the top-N archs (Fig. 3)')
  usage.add_argument('--bench', default=BUILTIN,
                     help=f"bench table (.csv or .csv.gz); {BUILTIN!r} (default) is the "
                          'packaged NB201 table')
  usage.add_argument('--mask', action='append',
                     help="masked ops, e.g. 'none,avg_pool_3x3'; '' = full space; "
                          'repeat for several subsets')
  usage.add_argument('--metric', default=DEFAULT_METRIC, help='ranking column')
  usage.add_argument('--top_ns', type=_int_list, default=DEFAULT_TOP_NS,
                     help='comma-separated group sizes')
  usage.add_argument('--out', help='CSV to write (mask, top_n, op, usage, share)')
  usage.set_defaults(run=run_usage)
  convert = commands.add_parser('convert', help='build a bench table from official files')
  convert.add_argument('--source', required=True, choices=('nb201', 'nats'))
  convert.add_argument('--file', required=True,
                       help='NAS-Bench-201 .pth file, or NATS-tss file / directory')
  convert.add_argument('--out', required=True, help='table to write (.csv or .csv.gz)')
  convert.set_defaults(run=run_convert)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    args.run(args)
  except (BenchError, space.ArchError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
