"""Tests of spos_jax.bench: table loading and validation, groups, op usage, CLI, converter."""
from __future__ import annotations

import csv
import gzip
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from spos_jax import bench
from spos_jax import space
from spos_jax.bench import BenchError


# A hand-checked tiny bench: op counts per arch are written beside each arch.
TINY_ARCHS = np.array([
    [3, 3, 3, 3, 3, 3],  # conv3x3 x6
    [1, 3, 0, 3, 1, 2],  # skip x2, conv3x3 x2, none x1, conv1x1 x1
    [4, 4, 4, 4, 4, 4],  # pool x6
    [0, 0, 0, 0, 0, 1],  # none x5, skip x1 (dead)
], np.int32)
TINY_INDICES = [7, 3, 11, 5]
TINY_ACC = [94.0, 90.0, 60.0, 10.0]


def write_table(path: Path, header: list[str], rows: list[list]) -> Path:
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def tiny_rows() -> list[list]:
  return [[i, space.arch_to_string(a), acc, acc / 2, int(space.is_dead(a))]
          for i, a, acc in zip(TINY_INDICES, TINY_ARCHS, TINY_ACC)]


TINY_HEADER = ['index', 'arch', 'cifar10_test', 'cifar100_test', 'dead']


@pytest.fixture
def tiny_path(tmp_path) -> Path:
  return write_table(tmp_path / 'tiny.csv', TINY_HEADER, tiny_rows())


@pytest.fixture
def tiny(tiny_path) -> bench.Bench:
  return bench.load_bench(tiny_path, expect_full=False)


@pytest.fixture(scope='module')
def shared(nb201_table) -> bench.Bench:
  """The plain-CSV NB201 table of conftest.nb201_table (skips where it is absent)."""
  return bench.load_bench(nb201_table)


# ---------------------------------------------------------------------------
# The NB201 table as a plain CSV file (test data outside the package)


def test_plain_csv_table_loads_all_archs(shared):
  assert len(shared) == space.NUM_ARCHS
  assert shared.archs.shape == (space.NUM_ARCHS, 6) and shared.archs.dtype == np.int32
  assert shared.indices.dtype == np.int64
  np.testing.assert_array_equal(np.sort(shared.indices), np.arange(space.NUM_ARCHS))
  for name in ('cifar10_test', 'cifar100_test', 'imagenet16_test', 'cifar10_valid_12ep'):
    assert name in shared.metric_names
    assert shared.metric(name).dtype == np.float64
  assert 'dead' not in shared.metrics and 'index' not in shared.metrics
  assert len(shared.sha256) == 64
  assert shared.dead.sum() == 341
  row0 = np.flatnonzero(shared.indices == 0)[0]
  assert shared.arch_strings[row0] == ('|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+'
                                       '|nor_conv_1x1~0|skip_connect~1|skip_connect~2|')
  best = bench.top_n(shared, 'cifar10_test', 1)[0]
  assert shared.indices[best] == 6111  # ties with 13714; the lower index wins
  np.testing.assert_array_equal(
      shared.archs, np.stack([space.string_to_arch(s) for s in shared.arch_strings]))


def test_bench_arrays_are_read_only(shared):
  with pytest.raises(ValueError):
    shared.archs[0, 0] = 1
  with pytest.raises(ValueError):
    shared.metric('cifar10_test')[0] = 0.0


def test_masked_subset_sizes(shared):
  no_zero = bench.restrict(shared, space.allowed_ops_from_mask('none'))
  assert len(no_zero) == 4 ** 6 == 4096
  assert not (no_zero.archs == space.NONE).any()
  no_zero_pool = bench.restrict(shared, space.allowed_ops_from_mask('none,avg_pool_3x3'))
  assert len(no_zero_pool) == 3 ** 6 == 729
  assert np.isin(no_zero_pool.archs, [space.SKIP, space.CONV1, space.CONV3]).all()
  assert no_zero_pool.sha256 == shared.sha256
  rows = bench.rows_for_archs(shared, no_zero_pool.archs)
  np.testing.assert_array_equal(shared.indices[rows], no_zero_pool.indices)
  np.testing.assert_array_equal(shared.metric('cifar10_test')[rows],
                                no_zero_pool.metric('cifar10_test'))


@pytest.mark.parametrize('mask', ['', 'none', 'none,avg_pool_3x3'])
def test_top_n_are_the_best_n(shared, mask):
  subset = bench.restrict(shared, space.allowed_ops_from_mask(mask))
  values = subset.metric('cifar10_test')
  for n in (10, 100, 500):
    top = bench.top_n(subset, 'cifar10_test', n)
    assert len(top) == n == len(set(top.tolist()))
    assert (np.diff(values[top]) <= 0).all()
    rest = np.setdiff1d(np.arange(len(subset)), top)
    assert values[top].min() >= values[rest].max()
    np.testing.assert_array_equal(np.sort(values[top]), np.sort(values)[-n:])


def test_random_sample_reproducible_from_seed(shared):
  a = bench.random_sample(shared, 1000, seed=0)
  np.testing.assert_array_equal(a, bench.random_sample(shared, 1000, seed=0))
  assert len(a) == 1000 == len(np.unique(a)) and (np.diff(a) > 0).all()
  b = bench.random_sample(shared, 1000, seed=1)
  assert not np.array_equal(a, b)
  # The sample is a function of the arch set and the seed, not of the row order.
  perm = np.random.default_rng(5).permutation(len(shared))
  shuffled = bench.take_rows(shared, perm)
  c = bench.random_sample(shuffled, 1000, seed=0)
  np.testing.assert_array_equal(np.sort(shuffled.indices[c]), np.sort(shared.indices[a]))


def test_arch_groups(shared):
  subset = bench.restrict(shared, space.allowed_ops_from_mask('none,avg_pool_3x3'))
  groups = bench.arch_groups(subset, 'cifar10_test')
  assert list(groups) == ['top10', 'top25', 'top50', 'top100', 'top150', 'top250',
                          'top500', 'random', 'all']
  for n in (10, 25, 50, 100, 150, 250, 500):
    np.testing.assert_array_equal(groups[f'top{n}'], bench.top_n(subset, 'cifar10_test', n))
  np.testing.assert_array_equal(groups['random'], np.arange(729))  # fewer than 1000
  np.testing.assert_array_equal(groups['all'], np.arange(729))
  full = bench.arch_groups(shared, 'cifar10_test', top_ns=(10,), random_seed=3)
  assert list(full) == ['top10', 'random', 'all'] and len(full['random']) == 1000
  np.testing.assert_array_equal(full['random'], bench.random_sample(shared, 1000, 3))


@pytest.mark.parametrize('mask', ['', 'none', 'none,avg_pool_3x3'])
def test_unique_classes_one_row_per_class_by_the_stated_rule(mask):
  """The lowest NB201 index represents its class; each metric is the class mean over
  the members of the (masked) subset; sizes add up to the subset; row order kept."""
  full = bench.load_bench(bench.BUILTIN)
  subset = bench.restrict(full, space.allowed_ops_from_mask(mask))
  unique = bench.ranked_subset(full, space.allowed_ops_from_mask(mask), unique=True)
  classes = space.isomorphism_class(subset.archs)
  assert len(unique) == len(np.unique(classes))
  assert unique.class_sizes.sum() == len(subset)
  assert (np.diff(bench.rows_for_archs(subset, unique.archs)) > 0).all()
  np.testing.assert_array_equal(unique.class_ids, space.isomorphism_class(unique.archs))
  for row in np.random.default_rng(0).choice(len(unique), 200, replace=False):
    members = classes == unique.class_ids[row]
    assert unique.class_sizes[row] == members.sum()
    assert unique.indices[row] == subset.indices[members].min()
    for name in subset.metric_names:
      assert unique.metric(name)[row] == pytest.approx(subset.metric(name)[members].mean(),
                                                       abs=1e-9)
  # take_rows keeps the class columns; a bench of classes is not split again.
  picked = bench.take_rows(unique, [2, 0])
  np.testing.assert_array_equal(picked.class_ids, unique.class_ids[[2, 0]])
  np.testing.assert_array_equal(picked.class_sizes, unique.class_sizes[[2, 0]])
  with pytest.raises(BenchError, match='isomorphism classes already'):
    bench.unique_classes(unique)
  if not mask:
    assert len(unique) == space.NUM_UNIQUE_ARCHS == 6466


def test_unique_classes_of_the_tiny_bench(tmp_path):
  """Two isomorphic rows (a skip chain and the direct edge) become one: the lower index
  represents it with the mean accuracy."""
  archs = [space.string_to_arch('|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|'),
           space.string_to_arch('|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|'),
           TINY_ARCHS[0]]
  rows = [[9, space.arch_to_string(archs[0]), 80.0], [4, space.arch_to_string(archs[1]), 70.0],
          [6, space.arch_to_string(archs[2]), 94.0]]
  table = bench.load_bench(write_table(tmp_path / 't.csv', ['index', 'arch', 'cifar10_test'],
                                       rows), expect_full=False)
  unique = bench.unique_classes(table)
  assert unique.indices.tolist() == [4, 6]
  assert unique.metric('cifar10_test').tolist() == [75.0, 94.0]
  assert unique.class_sizes.tolist() == [2, 1]


def test_every_top500_arch_uses_conv3x3(shared):
  """Paper Sec. 4 / Fig. 3: unless masked, every top-500 arch holds a 3x3 conv."""
  top = shared.archs[bench.top_n(shared, 'cifar10_test', 500)]
  assert (top == space.CONV3).any(axis=1).all()
  stats = bench.op_usage(top)
  assert stats['usage']['nor_conv_3x3'] == 1.0
  assert 0.4 < stats['share']['nor_conv_3x3'] < 0.5  # "roughly half of the choices"
  assert stats['share']['avg_pool_3x3'] == min(stats['share'].values())


def test_usage_cli_writes_csv(tmp_path, capsys, nb201_table):
  out = tmp_path / 'usage.csv'
  code = bench.main(['usage', f'--bench={nb201_table}', '--mask=', '--mask=none,avg_pool_3x3',
                     '--top_ns=10,500', f'--out={out}'])
  assert code == 0
  printed = capsys.readouterr().out
  assert 'mask none+avg_pool_3x3' in printed and 'nor_conv_3x3' in printed
  with open(out, newline='') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['mask', 'top_n', 'op', 'usage', 'share']
  assert len(rows) == 2 * 3 * 5  # masks x (top10, top500, all) x ops
  cell = {(r['mask'], r['top_n'], r['op']): r for r in rows}
  assert float(cell['all_ops', '500', 'nor_conv_3x3']['usage']) == 1.0
  assert float(cell['none+avg_pool_3x3', '10', 'none']['usage']) == 0.0
  assert float(cell['all_ops', 'all', 'none']['share']) == pytest.approx(0.2)
  for mask in ('all_ops', 'none+avg_pool_3x3'):
    shares = [float(r['share']) for r in rows if r['mask'] == mask and r['top_n'] == '10']
    assert sum(shares) == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# Tiny hand-made tables


def test_op_usage_hand_checked():
  stats = bench.op_usage(TINY_ARCHS)
  assert stats['usage'] == pytest.approx({'none': 2 / 4, 'skip_connect': 2 / 4,
                                          'nor_conv_1x1': 1 / 4, 'nor_conv_3x3': 2 / 4,
                                          'avg_pool_3x3': 1 / 4})
  assert stats['share'] == pytest.approx({'none': 6 / 24, 'skip_connect': 3 / 24,
                                          'nor_conv_1x1': 1 / 24, 'nor_conv_3x3': 8 / 24,
                                          'avg_pool_3x3': 6 / 24})
  with pytest.raises(BenchError, match='at least|n >= 1'):
    bench.op_usage(np.zeros((0, 6), np.int32))


def test_tiny_table_load_and_usage_rows(tiny):
  assert len(tiny) == 4 and tiny.metric_names == ('cifar10_test', 'cifar100_test')
  np.testing.assert_array_equal(tiny.archs, TINY_ARCHS)
  np.testing.assert_array_equal(tiny.indices, TINY_INDICES)
  np.testing.assert_array_equal(tiny.dead, [False, False, False, True])
  rows = bench.usage_rows(tiny, (), 'cifar10_test', top_ns=(2,))
  got = {(r['top_n'], r['op']): (r['usage'], r['share']) for r in rows}
  # top-2 by cifar10_test: archs 0 and 1.
  assert got['2', 'nor_conv_3x3'] == pytest.approx((1.0, 8 / 12))
  assert got['2', 'none'] == pytest.approx((0.5, 1 / 12))
  assert got['all', 'avg_pool_3x3'] == pytest.approx((0.25, 6 / 24))
  masked = bench.usage_rows(tiny, (space.POOL,), 'cifar10_test', top_ns=(10,))
  assert {r['mask'] for r in masked} == {'avg_pool_3x3'}
  assert {(r['op'], r['usage']) for r in masked if r['top_n'] == 'all'} >= {
      ('avg_pool_3x3', 0.0), ('nor_conv_3x3', 2 / 3)}


def test_top_n_ties_broken_by_nb201_index(tmp_path):
  archs = [space.all_archs()[k] for k in (40, 30, 20, 10)]
  rows = [[idx, space.arch_to_string(a), acc]
          for idx, a, acc in zip([9, 4, 6, 2], archs, [50.0, 70.0, 70.0, 70.0])]
  b = bench.load_bench(write_table(tmp_path / 't.csv', ['index', 'arch', 'acc'], rows),
                       expect_full=False)
  np.testing.assert_array_equal(b.indices[bench.top_n(b, 'acc', 4)], [2, 4, 6, 9])
  np.testing.assert_array_equal(bench.top_n(b, 'acc', 10), bench.top_n(b, 'acc', 4))
  with pytest.raises(BenchError):
    bench.top_n(b, 'acc', 0)


def test_random_sample_small_subset_returns_all_sorted(tiny):
  np.testing.assert_array_equal(bench.random_sample(tiny, 1000, seed=7), np.arange(4))
  part = bench.random_sample(tiny, 2, seed=7)
  assert len(part) == 2 and (np.diff(part) > 0).all()


def test_restrict_and_rows_for_archs(tiny):
  no_pool = bench.restrict(tiny, space.allowed_ops_from_mask('pool'))
  np.testing.assert_array_equal(no_pool.indices, [7, 3, 5])
  np.testing.assert_array_equal(bench.rows_for_archs(tiny, TINY_ARCHS[::-1]), [3, 2, 1, 0])
  with pytest.raises(BenchError, match='allowed ops'):
    bench.restrict(tiny, (0, 7))


def test_bench_lacking_archs_names_first_missing(tiny):
  no_pool = bench.restrict(tiny, space.allowed_ops_from_mask('pool'))
  with pytest.raises(BenchError) as err:
    bench.rows_for_archs(no_pool, TINY_ARCHS)
  assert space.arch_to_string(TINY_ARCHS[2]) in str(err.value)
  assert '1 missing' in str(err.value)
  with pytest.raises(BenchError, match='integer array'):
    bench.rows_for_archs(tiny, TINY_ARCHS[0])


def test_unknown_metric_lists_available(tiny):
  with pytest.raises(BenchError) as err:
    tiny.metric('cifar10_valid')
  assert "'cifar10_valid'" in str(err.value)
  assert 'cifar10_test, cifar100_test' in str(err.value)


def test_gzip_table_reads_like_plain(tiny_path, tiny, tmp_path):
  gz = tmp_path / 'tiny.csv.gz'
  gz.write_bytes(gzip.compress(tiny_path.read_bytes()))
  b = bench.load_bench(gz, expect_full=False)
  np.testing.assert_array_equal(b.archs, tiny.archs)
  np.testing.assert_array_equal(b.metric('cifar100_test'), tiny.metric('cifar100_test'))
  assert b.sha256 != tiny.sha256
  cut = tmp_path / 'cut.csv.gz'
  cut.write_bytes(gz.read_bytes()[:-12])
  with pytest.raises(BenchError, match='cut.csv.gz.*truncated gzip'):
    bench.load_bench(cut, expect_full=False)


# ---------------------------------------------------------------------------
# Bad input


def test_missing_file(tmp_path):
  with pytest.raises(BenchError, match='nope.csv: no such bench file'):
    bench.load_bench(tmp_path / 'nope.csv')


def test_empty_file(tmp_path):
  (tmp_path / 'empty.csv').write_text('')
  with pytest.raises(BenchError, match='empty.csv: empty file'):
    bench.load_bench(tmp_path / 'empty.csv')
  write_table(tmp_path / 'header_only.csv', TINY_HEADER, [])
  with pytest.raises(BenchError, match='no data rows'):
    bench.load_bench(tmp_path / 'header_only.csv', expect_full=False)


def test_truncated_row(tiny_path):
  text = tiny_path.read_text()
  tiny_path.write_text(text[:text.rindex(',')] + '\n')  # the last row loses its last field
  with pytest.raises(BenchError) as err:
    bench.load_bench(tiny_path, expect_full=False)
  assert 'tiny.csv, line 5' in str(err.value)
  assert 'expected 5 fields' in str(err.value) and 'found 4' in str(err.value)


@pytest.mark.parametrize('missing', ['index', 'arch'])
def test_missing_id_column(tmp_path, missing):
  keep = [i for i, name in enumerate(TINY_HEADER) if name != missing]
  path = write_table(tmp_path / 't.csv', [TINY_HEADER[i] for i in keep],
                     [[row[i] for i in keep] for row in tiny_rows()])
  with pytest.raises(BenchError, match=f"t.csv, line 1: header has no '{missing}' column"):
    bench.load_bench(path, expect_full=False)


def test_header_without_metrics_or_with_repeats(tmp_path):
  path = write_table(tmp_path / 't.csv', ['index', 'arch', 'dead'],
                     [row[:2] + row[-1:] for row in tiny_rows()])
  with pytest.raises(BenchError, match='no metric column'):
    bench.load_bench(path, expect_full=False)
  path = write_table(tmp_path / 'u.csv', ['index', 'arch', 'acc', 'acc'],
                     [row[:4] for row in tiny_rows()])
  with pytest.raises(BenchError, match="column 'acc' appears twice"):
    bench.load_bench(path, expect_full=False)


@pytest.mark.parametrize('value', ['abc', '', 'nan'])
def test_bad_number_names_line_and_column(tmp_path, value):
  rows = tiny_rows()
  rows[1][3] = value
  path = write_table(tmp_path / 't.csv', TINY_HEADER, rows)
  with pytest.raises(BenchError) as err:
    bench.load_bench(path, expect_full=False)
  assert "t.csv, line 3, column 'cifar100_test': " in str(err.value)
  assert repr(value) in str(err.value)


def test_bad_index(tmp_path):
  rows = tiny_rows()
  rows[2][0] = '-4'
  path = write_table(tmp_path / 't.csv', TINY_HEADER, rows)
  with pytest.raises(BenchError, match="line 4, column 'index': '-4' is not"):
    bench.load_bench(path, expect_full=False)


def test_invalid_arch_reports_space_message(tmp_path):
  rows = tiny_rows()
  rows[0][1] = rows[0][1].replace('nor_conv_3x3~1', 'conv5x5~1')
  path = write_table(tmp_path / 't.csv', TINY_HEADER, rows)
  with pytest.raises(BenchError) as err:
    bench.load_bench(path, expect_full=False)
  with pytest.raises(space.ArchError) as arch_err:
    space.string_to_arch(rows[0][1])
  assert "t.csv, line 2, column 'arch': invalid arch" in str(err.value)
  assert str(arch_err.value) in str(err.value)


def test_duplicate_arch(tmp_path):
  rows = tiny_rows()
  rows[3] = [99] + rows[1][1:]
  path = write_table(tmp_path / 't.csv', TINY_HEADER, rows)
  with pytest.raises(BenchError, match=r"line 5, column 'arch': duplicate arch .*first at line 3"):
    bench.load_bench(path, expect_full=False)


def test_duplicate_index(tmp_path):
  rows = tiny_rows()
  rows[2][0] = rows[0][0]
  path = write_table(tmp_path / 't.csv', TINY_HEADER, rows)
  with pytest.raises(BenchError, match=r"line 4, column 'index': duplicate index 7 .*line 2"):
    bench.load_bench(path, expect_full=False)


def test_wrong_dead_flag(tmp_path):
  rows = tiny_rows()
  rows[3][4] = 0
  path = write_table(tmp_path / 't.csv', TINY_HEADER, rows)
  with pytest.raises(BenchError, match="line 5, column 'dead': says 0 but the arch is dead"):
    bench.load_bench(path, expect_full=False)


def test_partial_table_says_what_is_missing_and_what_to_do(tiny_path):
  """A command-line user cannot pass expect_full=False: the message says how many
  archs are missing, names one and points to the full table instead."""
  with pytest.raises(BenchError) as err:
    bench.load_bench(tiny_path)
  message = str(err.value)
  assert 'holds 4 of the 15625 NB201 archs (15621 missing, e.g. |none~0|' in message
  assert "bench.path='builtin'" in message and 'expect_full' not in message
  assert '\n' not in message


def test_table_with_a_utf8_byte_order_mark_loads(tiny_path, tiny, tmp_path):
  """Excel writes a BOM before the header; it must not end up in the first column name."""
  bom = tmp_path / 'excel.csv'
  bom.write_bytes(b'\xef\xbb\xbf' + tiny_path.read_bytes())
  b = bench.load_bench(bom, expect_full=False)
  np.testing.assert_array_equal(b.indices, tiny.indices)
  assert b.metric_names == tiny.metric_names


def test_table_without_header_says_the_header_is_missing(tmp_path):
  path = write_table(tmp_path / 't.csv', tiny_rows()[0], tiny_rows()[1:])
  with pytest.raises(BenchError) as err:
    bench.load_bench(path, expect_full=False)
  message = str(err.value)
  assert 't.csv, line 1: the header is missing' in message
  assert "'index', 'arch'" in message and 'appears twice' not in message


@pytest.mark.parametrize('value', ['100.5', '-0.1', '1e3'])
def test_accuracy_outside_0_100_names_line_and_column(tmp_path, value):
  rows = tiny_rows()
  rows[2][2] = value
  path = write_table(tmp_path / 't.csv', TINY_HEADER, rows)
  with pytest.raises(BenchError) as err:
    bench.load_bench(path, expect_full=False)
  assert (f"t.csv, line 4, column 'cifar10_test': {value!r} is outside 0..100"
          in str(err.value))


def test_accuracies_0_and_100_are_accepted(tmp_path):
  rows = tiny_rows()
  rows[0][2], rows[1][2] = '100', '0'
  b = bench.load_bench(write_table(tmp_path / 't.csv', TINY_HEADER, rows), expect_full=False)
  assert b.metric('cifar10_test')[:2].tolist() == [100.0, 0.0]


def test_directory_as_bench_is_refused_as_a_directory(tmp_path):
  with pytest.raises(BenchError, match='is a directory, not a bench table file'):
    bench.load_bench(tmp_path)
  with pytest.raises(BenchError, match=f"bench.path='{tmp_path}' is a directory"):
    bench.check_path(str(tmp_path))


# ---------------------------------------------------------------------------
# The packaged table and bench.path values

NB201_CSV_SHA256 = 'fddc21507f6bce05964d057d289a5f1d11e18e4c9a6cad5038a4d633cad3d144'


def test_packaged_table_is_the_csv_compressed():
  """The builtin file decompresses to exactly the CSV of PROVENANCE.md (its sha256),
  and is gzip with mtime 0, so rebuilding it gives the same bytes."""
  raw = bench.BUILTIN_TABLE.read_bytes()
  assert raw[:2] == bench.GZIP_MAGIC and raw[4:8] == b'\0\0\0\0'  # mtime 0
  content = gzip.decompress(raw)
  assert hashlib.sha256(content).hexdigest() == NB201_CSV_SHA256
  assert NB201_CSV_SHA256 in (bench.BUILTIN_TABLE.parent / 'PROVENANCE.md').read_text()


def test_plain_csv_table_is_the_packaged_one(nb201_table):
  assert hashlib.sha256(nb201_table.read_bytes()).hexdigest() == NB201_CSV_SHA256


def test_packaged_table_loads_all_archs():
  b = bench.load_bench(bench.resolve_path('builtin'))
  assert len(b) == space.NUM_ARCHS
  assert bench.load_bench('builtin').sha256 == b.sha256
  assert b.metric_names == bench.BUILTIN_METRICS
  assert b.sha256 == hashlib.sha256(bench.BUILTIN_TABLE.read_bytes()).hexdigest()
  assert b.indices[bench.top_n(b, 'cifar10_test', 1)[0]] == 6111
  for dataset, metric in bench.DATASET_METRICS.items():
    assert metric in b.metric_names and bench.metric_dataset(metric) == dataset


def test_pyproject_ships_the_packaged_files():
  """The package-data globs of pyproject.toml name both files, so wheels hold them."""
  tomllib = pytest.importorskip('tomllib')
  root = Path(__file__).resolve().parents[1]
  project = tomllib.loads((root / 'pyproject.toml').read_text())
  globs = project['tool']['setuptools']['package-data']['spos_jax']
  shipped = {p for g in globs for p in (root / 'spos_jax').glob(g)}
  assert shipped == {bench.BUILTIN_TABLE, bench.BUILTIN_TABLE.parent / 'PROVENANCE.md'}


@pytest.mark.parametrize('value, expected', [
    ('builtin', str(bench.BUILTIN_TABLE)), ('', None), ('none', None), ('None', None),
    ('my/table.csv', 'my/table.csv'), ('table.csv.gz', 'table.csv.gz')])
def test_resolve_path(value, expected):
  assert bench.resolve_path(value) == expected


def test_check_path(tmp_path, tiny_path):
  assert bench.check_path('builtin') == str(bench.BUILTIN_TABLE)
  assert bench.check_path('none') is None and bench.check_path('') is None
  assert bench.check_path(str(tiny_path)) == str(tiny_path)
  missing = str(tmp_path / 'nope.csv')
  with pytest.raises(BenchError) as err:
    bench.check_path(missing)
  assert f'bench.path={missing!r}: no such bench file' in str(err.value)
  assert "'builtin'" in str(err.value) and '\n' not in str(err.value)
  with pytest.raises(BenchError, match='must be a string'):
    bench.resolve_path(3)


@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() == 0,
                    reason='root reads any file, so no file is unreadable')
def test_check_path_unreadable(tiny_path):
  tiny_path.chmod(0)
  with pytest.raises(BenchError, match='not readable'):
    bench.check_path(str(tiny_path))


def test_usage_cli_defaults_to_the_builtin_table(capsys):
  assert bench.main(['usage', '--mask=none,avg_pool_3x3', '--top_ns=10']) == 0
  printed = capsys.readouterr().out
  assert str(bench.BUILTIN_TABLE) in printed and 'mask none+avg_pool_3x3' in printed


def test_usage_cli_refuses_a_missing_table_in_one_line(tmp_path, capsys):
  assert bench.main(['usage', f'--bench={tmp_path / "nope.csv"}']) == 1
  err = capsys.readouterr().err
  assert 'no such bench file' in err and err.count('\n') == 1


@pytest.mark.parametrize('metric, dataset', [
    ('cifar10_test', 'cifar10'), ('cifar10_valid', 'cifar10'), ('cifar100_test', 'cifar100'),
    ('imagenet16_valid_12ep', 'imagenet16'), ('acc', None), ('cifar1000_x', None)])
def test_metric_dataset(metric, dataset):
  assert bench.metric_dataset(metric) == dataset


# ---------------------------------------------------------------------------
# Converter on fake APIs


FAKE_ARCHS = [space.arch_to_string(a) for a in TINY_ARCHS[:3]]
FAKE_SEEDS = (777, 888)


def fake_acc(arch: int, dataset: str, seed: int, epoch: int) -> float:
  """Hand-made accuracy: distinct per arch, dataset, seed and epoch."""
  base = {'cifar10-valid': 80.0, 'cifar10': 90.0, 'cifar100': 70.0, 'ImageNet16-120': 40.0}
  return base[dataset] + arch + (seed - 777) / 100 + (epoch - 199) / 4


class FakeApi:
  """Mimics get_more_info of nas_201_api >= 2.0 / nats_bench: 200 epochs, last 3 stored."""

  def __init__(self):
    self.meta_archs = list(FAKE_ARCHS)

  def __len__(self):
    return len(self.meta_archs)

  def get_more_info(self, index, dataset, iepoch=None, hp='12', is_random=True):
    assert hp == '200' and is_random is False
    epoch = 199 if iepoch is None else iepoch
    if epoch not in (197, 198, 199):
      raise KeyError(f'x-valid@{epoch}')
    acc = float(np.mean([fake_acc(index, dataset, s, epoch) for s in FAKE_SEEDS]))
    return {'valid-accuracy': acc} if dataset == 'cifar10-valid' else {'test-accuracy': acc}


class OldFakeApi(FakeApi):
  """Mimics nas_201_api 1.x, which selects the schedule with use_12epochs_result."""

  def get_more_info(self, index, dataset, iepoch=None, use_12epochs_result=False,
                    is_random=True):
    assert not use_12epochs_result
    return super().get_more_info(index, dataset, iepoch, '200', is_random)


@pytest.mark.parametrize('api_class', [FakeApi, OldFakeApi])
def test_table_from_api_averages_seeds_and_epochs(api_class):
  table = bench.table_from_api(api_class())
  assert list(table) == ['index', 'arch', 'cifar10_valid', 'cifar10_valid_avg197_199',
                         'cifar10_test', 'cifar100_test', 'imagenet16_test', 'dead']
  assert table['index'] == [0, 1, 2] and table['arch'] == FAKE_ARCHS
  assert table['dead'] == [0, 0, 0]
  # Final epoch, mean over seeds 777 (+0.00) and 888 (+1.11): base + arch + 0.555.
  assert table['cifar10_valid'] == pytest.approx([80.555, 81.555, 82.555])
  # Mean over epochs 197..199 (-0.5, -0.25, 0) on top: -0.25.
  assert table['cifar10_valid_avg197_199'] == pytest.approx([80.305, 81.305, 82.305])
  assert table['cifar10_test'] == pytest.approx([90.555, 91.555, 92.555])
  assert table['cifar100_test'] == pytest.approx([70.555, 71.555, 72.555])
  assert table['imagenet16_test'] == pytest.approx([40.555, 41.555, 42.555])


def test_table_from_api_refuses_missing_values():
  column = bench.ApiColumn('early', 'cifar10-valid', 'valid-accuracy', (100,))
  with pytest.raises(BenchError, match="no 'valid-accuracy' for arch 0 .*iepoch=100"):
    bench.table_from_api(FakeApi(), columns=(column,))
  column = bench.ApiColumn('c10_valid_from_test', 'cifar10', 'valid-accuracy', (None,))
  with pytest.raises(BenchError, match="no 'valid-accuracy' for arch 0 on 'cifar10'"):
    bench.table_from_api(FakeApi(), columns=(column,))


@pytest.mark.parametrize('name', ['table.csv', 'table.csv.gz'])
def test_convert_cli_on_fake_api(tmp_path, monkeypatch, capsys, name):
  source_file = tmp_path / 'NAS-Bench-201-v1_1-096897.pth'
  source_file.write_bytes(b'')
  opened = []
  monkeypatch.setattr(bench, 'open_api', lambda source, file: opened.append(
      (source, file)) or FakeApi())
  out = tmp_path / name
  assert bench.main(['convert', '--source=nb201', f'--file={source_file}',
                     f'--out={out}']) == 0
  assert opened == [('nb201', str(source_file))]
  printed = capsys.readouterr().out
  assert 'wrote 3 archs' in printed and 'warning: 3 archs' in printed
  b = bench.load_bench(out, expect_full=False)
  assert b.metric_names == ('cifar10_valid', 'cifar10_valid_avg197_199', 'cifar10_test',
                            'cifar100_test', 'imagenet16_test')
  np.testing.assert_allclose(b.metric('cifar10_valid_avg197_199'), [80.305, 81.305, 82.305])
  np.testing.assert_array_equal(b.archs, TINY_ARCHS[:3])
  first = out.read_bytes()
  bench.write_table(out, bench.table_from_api(FakeApi()))
  assert out.read_bytes() == first  # reproducible bytes, gzip included


@pytest.mark.parametrize('source,module,hint', [
    ('nb201', 'nas_201_api', 'pip install nas-bench-201'),
    ('nats', 'nats_bench', 'pip install nats_bench')])
def test_convert_without_package_says_what_to_install(tmp_path, monkeypatch, capsys,
                                                      source, module, hint):
  monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
  source_file = tmp_path / 'bench.file'
  source_file.write_bytes(b'')
  with pytest.raises(BenchError, match=hint):
    bench.open_api(source, str(source_file))
  assert bench.main(['convert', f'--source={source}', f'--file={source_file}',
                     f'--out={tmp_path / "t.csv"}']) == 1
  assert hint in capsys.readouterr().err
  with pytest.raises(BenchError, match='no such benchmark file'):
    bench.open_api(source, str(tmp_path / 'missing.pth'))
