"""The report's figures (the paper's Figs. 2, 3, 4, 6, 11, proxies, the ranking
trajectory) and the one way figures are made and saved.

Figures are drawn on Agg without pyplot's global state, and saved without the
matplotlib version or a date (save): the same numbers give the same bytes, so that
figures can be committed beside the pages that link them.
"""
from __future__ import annotations

import os
from typing import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
import matplotlib.ticker
import numpy as np

from spos_jax import bench as bench_lib
from spos_jax import space
from spos_jax.report import runs as runs_lib
from spos_jax.report import stats

Run = runs_lib.Run
FORMATS = ('png', 'pdf')
# Left out of the files: the writing software's version and the date.
_STABLE_METADATA = {'png': {'Software': None},
                    'pdf': {'Creator': None, 'Producer': None, 'CreationDate': None}}
SCATTER_GROUPS = ('top50', 'top250', 'random')


def new_figure(width: float, height: float) -> Figure:
  figure = Figure(figsize=(width, height), layout='constrained')
  FigureCanvasAgg(figure)  # Agg, without pyplot's global state
  return figure


def save(figure: Figure, folder: str, stem: str, formats: Sequence[str] = FORMATS,
         dpi: int = 120) -> list[str]:
  """Write folder/stem.<format> for each format, with stable bytes; their paths."""
  os.makedirs(folder, exist_ok=True)
  paths = []
  for ext in formats:
    path = os.path.join(folder, f'{stem}.{ext}')
    figure.savefig(path, dpi=dpi, bbox_inches='tight', metadata=_STABLE_METADATA[ext])
    paths.append(path)
  return paths


def run_colors(count: int) -> list:
  palette = matplotlib.colormaps['tab10' if count <= 10 else 'tab20'].colors
  return [palette[i % len(palette)] for i in range(count)]


def seeds_phrase(runs: Sequence[Run]) -> str:
  """How the runs' numbers aggregate seeds, for titles: no '± std' for one seed."""
  counts = sorted({len(r.seeds) for r in runs})
  if counts == [1]:
    return 'one seed (no std)'
  if len(counts) == 1:
    return f'mean ± std over {counts[0]} seeds'
  return f'mean ± std over {counts[0]}-{counts[-1]} seeds (runs of one seed: no std)'


def _bench_label(runs: Sequence[Run]) -> str:
  names = {r.metrics.get('bench', {}).get('metric') for r in runs} - {None}
  return f'bench {"/".join(sorted(names)) or "accuracy"} (%)'


# ---------------------------------------------------------------------------
# Fig. 2: super-net against bench accuracy


def scatter_groups(runs: Sequence[Run], bench: bench_lib.Bench | None) -> list[str]:
  """Fig. 2's groups that at least one of the runs evaluated."""
  return [g for g in SCATTER_GROUPS
          if any(stats.group_positions(r, g, bench) is not None for r in runs)]


def scatter_figure(runs: Sequence[Run], bench: bench_lib.Bench | None,
                   title: str) -> Figure | None:
  """Fig. 2: super-net (x, mean over seeds) vs bench accuracy (y); rows = runs.

  Only groups with data get a column, and a run without one of them leaves its panel
  out; None when no run evaluated any of the groups.
  """
  groups = scatter_groups(runs, bench)
  if not groups:
    return None
  figure = new_figure(3.6 * len(groups), 2.9 * len(runs))
  axes = figure.subplots(len(runs), len(groups), squeeze=False)
  for row, run in enumerate(runs):
    x = run.predictions.scores.mean(axis=0)
    for col, group in enumerate(groups):
      ax = axes[row, col]
      found = stats.group_positions(run, group, bench)
      if found is None:
        ax.set_axis_off()
        continue
      pos, label = found
      stats_group = group if label != 'all scored' else 'all'
      kt = stats.group_stat(run, stats_group, 'kendall_tau')
      ax.scatter(x[pos], run.predictions.truth[pos], s=9, alpha=0.6, color=f'C{col}',
                 edgecolors='none')
      ax.set_title(f'{run.label}: {label} (n={len(pos)})\nKT {stats.format_stat(*kt)}',
                   fontsize=9)
      ax.grid(alpha=0.3)
      ax.tick_params(labelsize=8)
      if col == 0:
        ax.set_ylabel(_bench_label([run]), fontsize=9)
      if row == len(runs) - 1:
        ax.set_xlabel('super-net accuracy (%, mean over seeds)', fontsize=9)
  figure.suptitle(f'{title}\nKT of each seed, {seeds_phrase(runs)}', fontsize=10)
  return figure


# ---------------------------------------------------------------------------
# Metrics against N (Figs. 4, 5, 6, 11, proxies)


def log_n_axis(ax, sizes: Sequence[int]) -> None:
  ax.set_xscale('log')
  ax.set_xticks(list(sizes))
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  ax.set_xlabel('N (top-N bench archs)')
  ax.grid(alpha=0.3)


def plot_against_n(ax, run: Run, field: str, color, label: str, **style):
  """One run's field over its top-N groups (std band with several seeds), random dotted."""
  sizes = stats.top_sizes(run)
  values = [stats.group_stat(run, f'top{n}', field) for n in sizes]
  mean = np.asarray([m for m, _ in values], np.float64)
  line, = ax.plot(sizes, mean, marker='o', ms=3, lw=1.5, color=color, label=label, **style)
  if values and all(s is not None for _, s in values):
    std = np.asarray([s for _, s in values], np.float64)
    ax.fill_between(sizes, mean - std, mean + std, color=color, alpha=0.15, lw=0)
  if 'random' in run.metrics['groups']:
    ax.axhline(stats.group_stat(run, 'random', field)[0], color=color, ls=':', lw=1)
  return line


def lines_figure(runs: Sequence[Run], panels: Sequence[tuple[str, str]], title: str,
                 with_tau_a: bool) -> Figure:
  """Figs. 5, 6 and 11: a metric against N, one line per run, std band over seeds.

  The run's random group is drawn as a dotted level in the run's colour.
  """
  figure = new_figure(5.2 * len(panels) + 3.0, 4.2)
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  colors = run_colors(len(runs))
  all_sizes = sorted({n for run in runs for n in stats.top_sizes(run)})
  handles = []
  for run, color in zip(runs, colors):
    label = run.variant + (f'  (τa={stats.tau_a(run):+.2f})' if with_tau_a else '')
    for ax, (field, _) in zip(axes, panels):
      line = plot_against_n(ax, run, field, color, label)
    handles.append(line)
  for ax, (_, ylabel) in zip(axes, panels):
    log_n_axis(ax, all_sizes)
    ax.set_ylabel(ylabel)
  handles.append(Line2D([], [], color='gray', ls=':', label='random sample (dotted)'))
  figure.legend(handles=handles, loc='outside right center', fontsize=8,
                title='run' + ('  (tau_a)' if with_tau_a else ''), title_fontsize=8)
  figure.suptitle(f'{title}: {seeds_phrase(runs)}', fontsize=10)
  return figure


# Fig. 4's columns: subsets grouped by the ops masked besides one more ("Zero+X").
# The first op of a subset in this order is part of its column's base.
FAMILY_ORDER = ('none', 'avg_pool_3x3', 'nor_conv_1x1', 'skip_connect', 'nor_conv_3x3')
OP_SHORT = {'none': 'Zero', 'skip_connect': 'Skip', 'nor_conv_1x1': '1x1',
            'nor_conv_3x3': '3x3', 'avg_pool_3x3': 'Pool'}
SINGLE_FAMILY = 'single op masked'


def mask_family(masked_ops: str) -> tuple[str, ...]:
  """The base of a subset's column: () for all ops or one op masked; ('none',) for
  Zero+X; ('none', 'avg_pool_3x3') for Zero+Pool+X."""
  names = sorted((space.OPS[i] for i in space.parse_op_list(masked_ops or '')),
                 key=FAMILY_ORDER.index)
  return tuple(names[:-1])


def family_title(family: tuple[str, ...]) -> str:
  if not family:
    return SINGLE_FAMILY + ' (or none)'
  return '+'.join(OP_SHORT[o] for o in family) + '+X masked'


def size_order(size: str) -> int:
  sizes = list(runs_lib.SIZES)
  return sizes.index(size) if size in sizes else len(sizes)


def subset_grid_figure(runs: Sequence[Run], title: str) -> Figure:
  """Fig. 4 as in the paper: a column per subset family (single op, Zero+X, Pool+X,
  ...), per size a row of A_N and a row of Kendall tau, one colour per variant."""
  families = sorted({mask_family(r.config.get('space.masked_ops', '')) for r in runs},
                    key=lambda f: (len(f), [FAMILY_ORDER.index(o) for o in f]))
  sizes = sorted({r.size for r in runs}, key=size_order)
  fields = (('mean_supernet_acc', 'A_N (%)'), ('kendall_tau', 'Kendall tau'))
  figure = new_figure(4.4 * len(families), 2.7 * len(fields) * len(sizes))
  axes = figure.subplots(len(fields) * len(sizes), len(families), squeeze=False)
  variants = sorted({r.variant for r in runs})
  colors = dict(zip(variants, run_colors(len(variants))))
  all_sizes = sorted({n for run in runs for n in stats.top_sizes(run)})
  for i, size in enumerate(sizes):
    for col, family in enumerate(families):
      mine = [r for r in runs if r.size == size
              and mask_family(r.config.get('space.masked_ops', '')) == family]
      for j, (field, ylabel) in enumerate(fields):
        ax = axes[i * len(fields) + j, col]
        for run in sorted(mine, key=lambda r: r.name):
          plot_against_n(ax, run, field, colors[run.variant],
                         f'{run.variant}  (τa={stats.tau_a(run):+.2f})')
        log_n_axis(ax, all_sizes)
        ax.tick_params(labelsize=7)
        if col == 0:
          ax.set_ylabel(f'{runs_lib.SIZES.get(size, size)}: {ylabel}', fontsize=8)
        if i == 0 and j == 0:
          ax.set_title(family_title(family), fontsize=9)
        if j == 0 and mine:
          ax.legend(fontsize=6, loc='best', title='subset (τa)', title_fontsize=6)
        if not mine:
          ax.set_axis_off()
  figure.suptitle(f'{title}: A_N and Kendall tau against N, {seeds_phrase(runs)}; '
                  'dotted: the random sample', fontsize=10)
  return figure


def proxy_figure(runs: Sequence[Run], proxies: Sequence[Run], title: str) -> Figure:
  """Super-net runs (solid) and zero-cost proxies (dashed) on one axis: Kendall tau and
  Spearman against N, the 'all' group as a marker at its size."""
  panels = (('kendall_tau', 'Kendall tau'), ('spearman', 'Spearman (SCC)'))
  figure = new_figure(5.2 * len(panels) + 3.5, 4.2)
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  members = list(runs) + list(proxies)
  colors = run_colors(len(members))
  ticks = sorted({n for r in members for n in stats.top_sizes(r)}
                 | {int(stats.group_stat(r, 'all', 'n')[0]) for r in members
                    if 'all' in r.metrics['groups']})
  for run, color in zip(members, colors):
    style = {'ls': '--'} if run.is_proxy else {}
    for ax, (field, _) in zip(axes, panels):
      plot_against_n(ax, run, field, color, run.label, **style)
      if 'all' in run.metrics['groups']:
        ax.plot([stats.group_stat(run, 'all', 'n')[0]],
                [stats.group_stat(run, 'all', field)[0]],
                marker='*', ms=9, color=color, ls='none')
  for ax, (_, ylabel) in zip(axes, panels):
    log_n_axis(ax, ticks)
    ax.set_ylabel(ylabel)
  handles = [Line2D([], [], color=c, ls='--' if r.is_proxy else '-', marker='o', ms=3,
                    label=r.label) for r, c in zip(members, colors)]
  handles += [Line2D([], [], color='gray', marker='*', ms=9, ls='none',
                     label="group 'all' (at its size)"),
              Line2D([], [], color='gray', ls=':', label='random sample (dotted)')]
  figure.legend(handles=handles, loc='outside right center', fontsize=8,
                title='super-net (solid), proxy (dashed)', title_fontsize=8)
  figure.suptitle(f'{title}: {seeds_phrase(members)}', fontsize=10)
  return figure


# ---------------------------------------------------------------------------
# Fig. 3: operation usage


OP_COLORS = dict(zip(space.OPS, ('#7f7f7f', '#1f77b4', '#2ca02c', '#d62728', '#9467bd')))


def usage_figure(rows: Sequence[dict], metric: str) -> Figure:
  """Fig. 3: op usage (top row) and share (bottom row) of the top-N archs per subset."""
  masks = list(dict.fromkeys(r['mask'] for r in rows))
  figure = new_figure(3.4 * len(masks) + 1.5, 5.6)
  axes = figure.subplots(2, len(masks), squeeze=False, sharey='row')
  width = 0.8 / space.NUM_OPS
  for col, mask in enumerate(masks):
    mine = [r for r in rows if r['mask'] == mask]
    tops = list(dict.fromkeys(r['top_n'] for r in mine))
    x = np.arange(len(tops))
    for row, field in enumerate(('usage', 'share')):
      ax = axes[row, col]
      for i, op in enumerate(space.OPS):
        values = [next(r[field] for r in mine if r['top_n'] == t and r['op'] == op)
                  for t in tops]
        ax.bar(x + (i - (space.NUM_OPS - 1) / 2) * width, values, width,
               color=OP_COLORS[op], label=op)
      ax.set_xticks(x, tops, fontsize=7)
      ax.grid(axis='y', alpha=0.3)
      if row == 0:
        ax.set_title('all ops' if mask == 'all_ops' else f'masked: {mask}', fontsize=9)
      else:
        ax.set_xlabel('top-N bench archs', fontsize=8)
  axes[0, 0].set_ylabel('usage: share of archs\nholding the op')
  axes[1, 0].set_ylabel('share of the 6 edges\nholding the op')
  handles, labels = axes[0, 0].get_legend_handles_labels()
  figure.legend(handles, labels, loc='outside right center', fontsize=8, title='op')
  figure.suptitle(f'Operation usage of the top-N archs, ranked by {metric}', fontsize=10)
  return figure


# ---------------------------------------------------------------------------
# The ranking during training


TRAJECTORY_PANELS = (('kendall_tau', 'Kendall tau'), ('spearman', 'Spearman'),
                     ('tau_a', 'τa (N against A_N)'))


def trajectory_figure(trajectories: Sequence[tuple[Run, runs_lib.Trajectory]],
                      title: str) -> Figure:
  """Kendall tau, Spearman and tau_a against epoch: per run the mean over seeds as a
  line and the min..max over seeds shaded. Kendall tau and Spearman are of the group
  'all' (else the fixed sample; the legend says which)."""
  figure = new_figure(4.6 * len(TRAJECTORY_PANELS) + 3.0, 4.0)
  axes = figure.subplots(1, len(TRAJECTORY_PANELS), squeeze=False)[0]
  handles = []
  drawn = set()
  for (run, trajectory), color in zip(trajectories, run_colors(len(trajectories))):
    group = stats.trajectory_group(trajectory)
    label = run.variant + (f' ({group})' if group and group != 'all' else '')
    for ax, (field, _) in zip(axes, TRAJECTORY_PANELS):
      series = stats.trajectory_series(trajectory, field)
      if series is None or not np.isfinite(series.mean).any():
        continue
      ax.plot(series.epochs, series.mean, marker='o', ms=3, lw=1.5, color=color)
      ax.fill_between(series.epochs, series.low, series.high, color=color, alpha=0.15,
                      lw=0)
      drawn.add(field)
    handles.append(Line2D([], [], color=color, marker='o', ms=3, label=label))
  for ax, (field, ylabel) in zip(axes, TRAJECTORY_PANELS):
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if field not in drawn:  # tau_a needs top-N groups; a trajectory of a sample has none
      ax.text(0.5, 0.5, 'not recorded: the trajectories rank a sample,\n'
              'not top-N groups (eval.trajectory_size=0 ranks them)', ha='center',
              va='center', fontsize=8, color='0.4', transform=ax.transAxes)
      ax.set_xticks([])
      ax.set_yticks([])
  figure.legend(handles=handles, loc='outside right center', fontsize=8, title='run',
                title_fontsize=8)
  figure.suptitle(f'{title}: ranking during training, mean over seeds (line) and '
                  'min..max (band)', fontsize=10)
  return figure
