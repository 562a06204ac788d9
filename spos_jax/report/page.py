"""report.md and the files beside it: summary CSVs, op_usage.csv and the figures.

A section per sweep (a run shared by several sweeps appears in each): per size a
table, Fig. 4's grid, Figs. 11 and 2, and the ranking during training of the runs
that recorded one; then the zero-cost proxies, Fig. 3 from the bench table, and the
refused and missing runs.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import os
import re
from typing import Sequence

from spos_jax import bench as bench_lib
from spos_jax import results
from spos_jax import space
from spos_jax.report import figures
from spos_jax.report import runs as runs_lib
from spos_jax.report import stats

Run = runs_lib.Run
FIGURES_DIR = 'figures'
SCATTER_ROWS_PER_FIGURE = 8
# Fig. 3's subsets: the full space and each op masked once.
USAGE_MASKS = ((),) + tuple((op,) for op in range(space.NUM_OPS))


# ---------------------------------------------------------------------------
# CSV files


def _cell(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return repr(value)  # shortest exact repr: the CSV keeps full precision
  return str(value)


def write_csv(path: str, rows: Sequence[dict]) -> None:
  """Rows with the union of their keys as columns (first seen first)."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(columns)
    for row in rows:
      writer.writerow([_cell(row.get(c)) for c in columns])


# ---------------------------------------------------------------------------
# Pieces of the page


def _stem(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.+-]+', '_', text).strip('_') or 'runs'


def _save(figure, out: str, stem: str) -> list[str]:
  """The figure under out/figures as png and pdf; paths relative to out (the links)."""
  paths = figures.save(figure, os.path.join(out, FIGURES_DIR), stem)
  return [os.path.relpath(p, out).replace(os.sep, '/') for p in paths]


def _figure_link(paths: Sequence[str], alt: str) -> str:
  png, pdf = paths
  return f'![{alt}]({png})\n\n[PDF]({pdf})'


def size_title(runs: Sequence[Run]) -> str:
  """'small (C=32, N=2)'."""
  size = runs[0].size
  shapes = sorted({(r.config.get('model.channels'), r.config.get('model.cells_per_stage'))
                   for r in runs}, key=str)
  shape = ', '.join(f'C={c}, N={n}' for c, n in shapes)
  return f'{runs_lib.SIZES.get(size, "other size")} ({shape})'


def sections_of(runs: Sequence[Run], sweep: str | None) -> list[tuple[str, list[Run]]]:
  """(sweep, its runs) per sweep, sweeps in name order and '' (no sweep) last.

  A run shared by several sweeps (s-all is in Figs. 2, 4, 6, ...) is reported in each;
  with sweep (--figure) only in that one.
  """
  grouped = collections.defaultdict(list)
  for run in sorted(runs, key=lambda r: r.name):
    names = [run.sweep] if sweep else (run.sweeps or ('',))
    for name in names:
      grouped[name].append(dataclasses.replace(run, sweep=name))
  return [(name, grouped[name]) for name in sorted(grouped, key=lambda n: (n == '', n))]


def sizes_of(runs: Sequence[Run]) -> list[list[Run]]:
  """Runs grouped by size (s, m, w, other), each in name order."""
  grouped = collections.defaultdict(list)
  for run in sorted(runs, key=lambda r: r.name):
    grouped[run.size].append(run)
  return [grouped[k] for k in sorted(grouped, key=figures.size_order)]


def kt_table(runs: Sequence[Run]) -> list[str]:
  """Markdown table: per run seeds, tau_a, KT per group, precision@K, top-1."""
  sizes = sorted({n for r in runs for n in stats.top_sizes(r)})
  groups = [f'top{n}' for n in sizes] + ['random', 'all']
  header = (['run', 'seeds', 'τa'] + [f'KT {g}' for g in groups]
            + [f'P@{k}' for k in results.PRECISION_KS] + ['top-1 rank', 'top-1 regret'])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for run in runs:
    row = stats.run_row(run)
    cells = [f'`{run.label}`', str(len(run.seeds)), stats.format_stat(row['tau_a'], digits=2)]
    for g in groups:
      cells.append(stats.format_stat(*stats.group_stat(run, g, 'kendall_tau'))
                   if g in run.metrics['groups'] else '–')
    for k in results.PRECISION_KS:
      cells.append(stats.format_stat(row[f'precision_at_{k}_mean'],
                                     row[f'precision_at_{k}_std'], 2))
    cells.append(stats.format_rank(row['top1_bench_rank_mean'], row['top1_bench_rank_std']))
    cells.append(stats.format_stat(row['top1_regret_mean'], row['top1_regret_std'], 2))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def usage_metric(runs: Sequence[Run], bench: bench_lib.Bench) -> str:
  """The bench metric most runs ranked by, if the table has it."""
  counts = collections.Counter(r.metrics.get('bench', {}).get('metric') for r in runs)
  for metric, _ in counts.most_common():
    if metric in bench.metrics:
      return metric
  return bench_lib.DEFAULT_METRIC if bench_lib.DEFAULT_METRIC in bench.metrics else (
      bench.metric_names[0])


def usage_section(runs: Sequence[Run], bench: bench_lib.Bench | None, out: str) -> list[str]:
  """Fig. 3 from the bench table, with op_usage.csv; a note when there is no table."""
  lines = ['## Operation usage (Fig. 3)', '']
  if bench is None:
    return lines + ['Skipped: pass `--bench=TABLE.csv` to draw the op usage of the '
                    'bench\'s top-N archs.', '']
  metric = usage_metric(runs, bench)
  top_ns = sorted({n for r in runs for n in stats.top_sizes(r)}) or bench_lib.DEFAULT_TOP_NS
  rows = []
  for masked in USAGE_MASKS:
    rows += bench_lib.usage_rows(bench, masked, metric, top_ns)
  bench_lib.write_usage_csv(os.path.join(out, 'op_usage.csv'), rows)
  paths = _save(figures.usage_figure(rows, metric), out, 'fig3_op_usage')
  return lines + [
      f'Bench `{bench.path}` ({len(bench)} archs, sha256 `{bench.sha256[:12]}`), ranked '
      f'by `{metric}`. usage(op): share of the top-N archs holding op at least once; '
      'share(op): occurrences / (6 N). Numbers in `op_usage.csv`.', '',
      _figure_link(paths, 'Fig. 3-style op usage'), '']


def problems_section(title: str, problems: Sequence[runs_lib.Problem],
                     empty: str) -> list[str]:
  lines = [f'## {title}', '']
  if not problems:
    return lines + [empty, '']
  return lines + [f'- `{p.name}`: {p.reason}' for p in problems] + ['']


def trajectory_lines(runs: Sequence[Run], title: str, stem: str, out: str) -> list[str]:
  """The ranking during training of the runs with a trajectory.csv; nothing when none
  has one. An unreadable file is named, its run not drawn."""
  drawn, unreadable = [], []
  for run in runs:
    try:
      trajectory = runs_lib.read_trajectory(run.folder)
    except runs_lib.RunError as e:
      unreadable.append(f'- `{run.name}`: {e}')
      continue
    if trajectory is not None:
      drawn.append((run, trajectory))
  lines = []
  if drawn:
    figure = figures.trajectory_figure(drawn, title)
    lines += [_figure_link(_save(figure, out, f'trajectory_{stem}'),
                           f'ranking during training, {title}'), '',
              'Ranking during training (`trajectory.csv`): Kendall tau and Spearman of '
              "group `all` (of the fixed random sample, `sample`, where the run ranked "
              'one) and τa at each evaluation epoch; line: mean over seeds, band: min..max '
              'over seeds. Runs drawn: ' + ', '.join(f'`{r.name}`' for r, _ in drawn)
              + '; runs without a trajectory are not drawn.', '']
  if unreadable:
    lines += ['Trajectories that cannot be read (not drawn):', ''] + unreadable + ['']
  return lines


def sweep_section(sweep: str, runs: Sequence[Run], bench: bench_lib.Bench | None,
                  out: str) -> list[str]:
  """One sweep: a table per size, Fig. 4's grid, then per size Figs. 11 and 2 and the
  ranking during training."""
  title = sweep or 'Runs without a sweep'
  stem = _stem(sweep) if sweep else ''
  lines = [f'## {title}', '']
  for part in sizes_of(runs):
    lines += [f'### {size_title(part)}', ''] + kt_table(part) + ['']
  grid = figures.subset_grid_figure(runs, title)
  name = 'fig4_accuracy_tau' + (f'_{stem}' if stem else '')
  lines += [_figure_link(_save(grid, out, name), f'A_N and Kendall tau against N, {title}'),
            '']
  for part in sizes_of(runs):
    part_title = f'{title}, {size_title(part)}'
    part_stem = f'{stem}_{part[0].size}' if stem else part[0].size
    correlations = figures.lines_figure(part, (('spearman', 'Spearman (SCC)'),
                                               ('pearson', 'Pearson (PCC)')), part_title,
                                        with_tau_a=False)
    lines += [_figure_link(_save(correlations, out, f'fig11_scc_pcc_{part_stem}'),
                           f'SCC and PCC against N, {part_title}'), '']
    chunks = [part[i:i + SCATTER_ROWS_PER_FIGURE]
              for i in range(0, len(part), SCATTER_ROWS_PER_FIGURE)]
    for number, chunk in enumerate(chunks, start=1):
      suffix = f'_{number}' if len(chunks) > 1 else ''
      figure = figures.scatter_figure(chunk, bench,
                                      f'{part_title}{suffix.replace("_", ", part ")}')
      if figure is not None:
        lines += [_figure_link(_save(figure, out, f'fig2_scatter_{part_stem}{suffix}'),
                               f'super-net vs bench accuracy, {part_title}'), '']
    lines += trajectory_lines(part, part_title, part_stem, out)
  if any(stats.group_positions(r, 'random', bench)[1] == 'all scored' for r in runs
         if 'random' in r.metrics['groups']):
    lines += ['Where a panel says "all scored", the random group could not be redrawn: '
              'pass the bench table the runs used (`--bench`).', '']
  return lines


def proxy_section(runs: Sequence[Run], proxies: Sequence[Run], out: str) -> list[str]:
  """Zero-cost proxies against the super-net runs of the same subset, one figure each."""
  lines = ['## Zero-cost proxies and super-networks', '',
           'Proxies score each arch at initialisation (no training). Their τa is the Kendall '
           'tau of N against the mean proxy score of the top-N.', ''] + kt_table(proxies) + ['']
  subsets = sorted({p.config.get('space.masked_ops', '') for p in proxies})
  for masked in subsets:
    mine = [p for p in proxies if p.config.get('space.masked_ops', '') == masked]
    same = [r for r in runs if r.config.get('space.masked_ops', '') == masked]
    name = f'masked {masked}' if masked else 'all ops'
    figure = figures.proxy_figure(same, mine, f'Super-networks and proxies, {name}')
    lines += [_figure_link(_save(figure, out, f'proxies_kt_scc_{_stem(name)}'),
                           f'Kendall tau and Spearman against N, {name}'), '']
  return lines


READING = (
    'Reading the tables: KT is the Kendall tau (paper formula) of super-net against '
    'bench accuracy within a group (mean ± std over seeds; a single value with one '
    'seed); τa the Kendall tau of N against A_N (A_N averaged over seeds first; -1 is '
    'best); P@K the share of the bench top-K among the super-net top-K (all scored '
    "archs); top-1 the bench rank (1 = best) and regret (bench accuracy points) of the "
    "super-net's first arch. Accuracies are percentages. In the line plots, bands are "
    '± one std over seeds (runs of several seeds) and dotted levels the random group.')


def bench_line(bench: bench_lib.Bench | None, recorded: bool) -> str:
  """The overview's line on the bench table: given, recorded by the runs, or none."""
  if bench is not None:
    origin = ' (the table the runs recorded)' if recorded else ''
    return f'- bench for Fig. 3 and random groups: `{bench.path}`{origin}'
  return ('- bench: none given (`--bench`), and no table the runs recorded is readable '
          'here; Fig. 3 skipped')


def overview(root: str, found: runs_lib.Collection, bench: bench_lib.Bench | None,
             recorded: bool) -> list[str]:
  evals = collections.Counter(r.eval_name for r in found.runs)
  lines = ['# Single-path ranking correlations: sweep report', '',
           f'- root: `{os.path.normpath(root)}`',
           f'- runs: {len(found.runs)} with results, {len(found.missing)} missing, '
           f'{len(found.refused)} refused; {len(found.proxies)} proxy evaluation(s)',
           '- evaluation: ' + ', '.join(f'`{n}` ({c} run{"s" * (c != 1)})'
                                        for n, c in sorted(evals.items())),
           bench_line(bench, recorded),
           '- `summary.csv`: one row per run and group, mean/std over seeds (ddof=1) '
           'of n, kendall_tau, kendall_tau_b, spearman, pearson, mean_supernet_acc, '
           'mean_bench_acc; `summary_run.csv`: one row per run, tau_a, precision@K, '
           'top-1 rank/accuracy/regret. Proxies have rows of their own (score_kind '
           'proxy), where mean_supernet_acc is the mean proxy score.']
  if len(evals) > 1:
    lines.append('- **note**: runs used different evaluations; compare with care.')
  return lines + ['', READING, '']


# ---------------------------------------------------------------------------
# The whole report


def write_report(root: str, out: str, eval_name: str | None = None,
                 bench_path: str | None = None, sweep: str | None = None,
                 single: bool = False) -> runs_lib.Collection:
  """Collect the runs under root (or the single run folder root), write the CSVs,
  figures and report.md into out.

  Without bench_path the bench is the table the runs recorded (config.json's
  bench.path, metrics.json's evaluation identity), when a file of it is here.
  """
  if single:
    found = runs_lib.collect_run(root, eval_name)
  else:
    found = runs_lib.collect(root, eval_name, sweep, skip=[out])
  if not found.runs and not found.proxies:
    details = [f'{p.name}: {p.reason}' for p in found.refused + found.missing]
    wanted = (f'{results.RESULTS_FOLDER}/{eval_name}' if eval_name
              else f'{results.RESULTS_FOLDER}/<eval name>')
    raise runs_lib.ReportError(
        f'no run under {root} has usable {wanted}/{results.METRICS_FILE}'
        + (': ' + '; '.join(details) if details else ' (no run folders)'))
  everything = sorted(found.runs + found.proxies, key=lambda r: (r.name, r.eval_name))
  if bench_path:
    bench = runs_lib.load_bench(bench_path)
  else:
    bench = runs_lib.recorded_bench(everything)
  os.makedirs(out, exist_ok=True)
  write_csv(os.path.join(out, 'summary.csv'),
            [row for r in everything for row in stats.group_rows(r)])
  write_csv(os.path.join(out, 'summary_run.csv'), [stats.run_row(r) for r in everything])
  lines = overview(root, found, bench, recorded=not bench_path)
  for name, runs in sections_of(found.runs, sweep):
    lines += sweep_section(name, runs, bench, out)
  if found.proxies:
    lines += proxy_section(found.runs, found.proxies, out)
  if found.runs:
    lines += usage_section(found.runs, bench, out)
  lines += problems_section('Refused runs', found.refused, 'None.')
  lines += problems_section('Missing runs', found.missing, 'None: every run has results.')
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write('\n'.join(lines))
  return found
