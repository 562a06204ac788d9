"""The reproduction page: issue 11's claims F1-F8 of the paper against committed runs.

  python -m spos_jax.reproduction --root=results/paper --page=REPRODUCTION.md \
      [--figures=results/paper/figures]

ROOT holds one folder per run of the queue below, named as the sweep launcher names
them (launch/grid.py), each with config.json, run_info.json and results/<eval>/
(metrics.json, predictions.csv; results.py). The page's generated parts sit between
marker comments (`<!-- generated:NAME -->` ... `<!-- end generated:NAME -->`) and are
rewritten in place; everything outside them is hand-written and left untouched.

Each claim carries the rule that decides its verdict ('holds', 'does not hold',
'not yet run'). A run counts once its groups evaluation (results/running-groups, or
a whole-space evaluation of every seed) passes report.load_run's checks. Runs that a
claim compares must share epochs, data and bench column, else the claim waits for
runs that do. Every setting printed (epochs, seeds, data, bench column, device,
commit) is read from the runs' files, never typed in.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from typing import Callable, Sequence

import matplotlib
import matplotlib.lines
import matplotlib.ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from spos_jax import report
from spos_jax import results

# Issue 11's runs in its order of value: small (C=32, N=2) subsets, uniform sampling,
# medium (C=64, N=4). The device script (launch/reproduce_on_device.sh) runs them in
# this order.
QUEUE = (
    's-all', 's-mask_none', 's-mask_avg_pool_3x3', 's-mask_skip_connect',
    's-mask_none+avg_pool_3x3', 's-mask_nor_conv_3x3', 's-uniform-all',
    's-uniform-mask_none', 'm-all', 'm-mask_none')
GROUPS_EVAL = 'running-groups'  # the paper's groups, training's BN statistics
ALL_SCOPE_EVAL = 'running-all'  # every seed over the whole subset: holds the groups too
RUN_INFO_FILE = 'run_info.json'
SIZE_NAMES = {'s': 'small', 'm': 'medium', 'w': 'wide'}  # run name prefixes (launch/grid.py)
FIGURES_DIR = os.path.join('results', 'paper', 'figures')
VERDICTS = ('holds', 'does not hold', 'not yet run')
MISSING = '–'


@dataclasses.dataclass(frozen=True)
class Anchor:
  """An outside result over all 15625 archs of NB201 (issue 11)."""
  label: str
  kendall_tau: float
  spearman: float


ANCHORS = (
    Anchor('one-shot super-network (Zhao et al. 2021)', 0.485, 0.677),
    Anchor('few-shot super-networks (Zhao et al. 2021)', 0.551, 0.741),
)

# Tolerances of the rules. tau_a over the 7 groups N = 10..500 has 21 pairs; one pair
# out of order moves it by 2/21 = 0.095.
TAU_A_EXTREME = 0.8  # "tau_a = -1" means <= -0.8 (at most two pairs out of order)
TAU_A_NEAR_ZERO = 1 / 3  # "tau_a ~ 0" means -1/3 <= tau_a <= 1/3
TAU_A_MARGIN = 0.2  # "worse" means higher by more than 0.2; "equal or better", not worse
SAME_ACCURACY = 1.0  # "A_N the same": smallest-N and largest-N A_N within 1 point
HIGH_KENDALL_TAU = 0.5  # "a high Kendall tau": seed mean >= 0.5 in a top-N group
CHANCE_ACCURACY = 10.0  # 10 classes
NEAR_CHANCE = 15.0  # "near chance": random-group super-net accuracy <= 15 %


class ReproductionError(Exception):
  """The page cannot be written: a bad root or page file."""


# ---------------------------------------------------------------------------
# The runs


@dataclasses.dataclass(frozen=True)
class FullSpace:
  """Kendall tau and Spearman of one run over its whole (masked) subset."""
  eval_name: str
  seeds: tuple[str, ...]
  archs: int
  kendall_tau: tuple[float, float | None]  # mean, std over seeds
  spearman: tuple[float, float | None]


@dataclasses.dataclass
class Evidence:
  """What ROOT holds for the queue: checked runs, whole-space numbers, absences."""
  runs: dict[str, report.Run]
  full_space: dict[str, FullSpace]
  run_info: dict[str, dict]
  absent: dict[str, str]  # queue name -> why it has no usable groups evaluation

  def present(self, names: Sequence[str]) -> list[report.Run]:
    return [self.runs[n] for n in names if n in self.runs]


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def evaluation_metrics(folder: str) -> dict[str, dict]:
  """{eval name: metrics.json} of every completed evaluation of a run folder."""
  base = os.path.join(folder, 'results')
  found = {}
  for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
    path = os.path.join(base, name, results.METRICS_FILE)
    if os.path.isfile(path):
      summary = _read_json(path)  # an unreadable one is kept: load_run names the fault
      found[name] = summary if isinstance(summary, dict) else {}
  return found


def groups_evaluation(evaluations: dict[str, dict]) -> str | None:
  """The evaluation that holds the paper's groups for every seed, if any."""
  for name in (GROUPS_EVAL, ALL_SCOPE_EVAL):
    if name in evaluations:
      return name
  return None


def full_space_of(evaluations: dict[str, dict]) -> FullSpace | None:
  """The whole-subset ranking with the most seeds (eval.scope=all), if any.

  A one-seed whole-space evaluation of a five-seed run is fine here: the numbers
  come from its own metrics.json and seeds. An evaluation that scored fewer archs
  than its subset holds is not whole-space, and one scored by a zero-cost proxy is
  not the super-network's: both are skipped.
  """
  best = None
  for name, summary in evaluations.items():
    config = summary.get('config') or {}
    entry = (summary.get('groups') or {}).get('all')
    scorer = (summary.get('score') or {}).get('kind', 'supernet')  # not a zero-cost proxy
    if config.get('eval.scope') != 'all' or not entry or scorer != 'supernet':
      continue
    seeds = tuple(str(s) for s in summary.get('seeds', []))
    archs = int(summary.get('evaluated_archs', -1))
    if not seeds or archs != (summary.get('bench') or {}).get('archs_in_subset'):
      continue
    try:
      stats = {field: mean_std([entry['per_seed'][s][field] for s in seeds])
               for field in ('kendall_tau', 'spearman')}
    except (KeyError, TypeError):  # a seed without its numbers: not a usable ranking
      continue
    candidate = FullSpace(name, seeds, archs, stats['kendall_tau'], stats['spearman'])
    if best is None or len(candidate.seeds) > len(best.seeds):
      best = candidate
  return best


def missing_reason(folder: str) -> str:
  """Why a run folder has no groups evaluation: failed, not evaluated, still training."""
  try:
    with open(os.path.join(folder, 'FAILED')) as f:
      return f'FAILED: {f.readline().strip() or "no message"}'
  except OSError:
    pass
  if os.path.exists(os.path.join(folder, 'TRAINED')):
    return f'trained, no results/{GROUPS_EVAL}'
  return 'training not finished'


def gather(root: str) -> Evidence:
  """Load every queue run under root: checked groups results, whole-space numbers."""
  if not os.path.isdir(root):
    raise ReproductionError(f'--root={root}: not a directory')
  evidence = Evidence({}, {}, {}, {})
  for name in QUEUE:
    folder = os.path.join(root, name)
    if not os.path.isdir(folder):
      evidence.absent[name] = 'no run folder'
      continue
    evaluations = evaluation_metrics(folder)
    full = full_space_of(evaluations)
    if full is not None:
      evidence.full_space[name] = full
    info = _read_json(os.path.join(folder, RUN_INFO_FILE))
    evidence.run_info[name] = info if isinstance(info, dict) else {}
    chosen = groups_evaluation(evaluations)
    if chosen is None:
      evidence.absent[name] = missing_reason(folder)
      continue
    try:
      evidence.runs[name] = report.load_run(folder, chosen)
    except report.RunError as e:
      evidence.absent[name] = f'refused: {e}'
  return evidence


# ---------------------------------------------------------------------------
# Numbers of a run


def mean_std(values) -> tuple[float, float | None]:
  """Mean and sample std over seeds (None with one seed); null (NaN) values stay NaN."""
  stats = results.mean_std([math.nan if v is None else v for v in values])
  return stats['mean'], stats['std']


def top_sizes(run: report.Run) -> list[int]:
  """The N of the run's top-N groups, ascending."""
  return sorted(int(g[3:]) for g in run.metrics['groups'] if re.fullmatch(r'top\d+', g))


def tau_a(run: report.Run) -> float:
  """The paper's tau_a: N against A_N, A_N averaged over seeds first."""
  return report.tau_a(run)


def tau_a_per_seed(run: report.Run) -> tuple[float, float | None]:
  return mean_std([run.metrics['tau_a']['per_seed'][s] for s in run.seeds])


def a_n(run: report.Run, n: int) -> tuple[float, float | None]:
  """A_N: mean super-net accuracy (%) over the bench's top-N archs, over seeds."""
  return report.group_stat(run, f'top{n}', 'mean_supernet_acc')


def random_accuracy(run: report.Run) -> tuple[float, float | None]:
  """Mean super-net accuracy (%) over the run's random sample of its subset."""
  return report.group_stat(run, 'random', 'mean_supernet_acc')


def top_kendall_taus(run: report.Run) -> dict[int, tuple[float, float | None]]:
  """Kendall tau within each top-N group: mean, std over seeds."""
  return {n: report.group_stat(run, f'top{n}', 'kendall_tau') for n in top_sizes(run)}


def mean_top_kendall_tau(run: report.Run) -> float:
  """The seed-mean Kendall tau averaged over the top-N groups."""
  return float(np.mean([m for m, _ in top_kendall_taus(run).values()]))


def fmt(value: float | None, std: float | None = None, digits: int = 2,
        signed: bool = True) -> str:
  """'+0.12 ± 0.03'; '+0.12' without a std; '–' for None; 'nan' for NaN."""
  if value is None:
    return MISSING
  if math.isnan(value):
    return 'nan'
  text = f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'
  if std is None or math.isnan(std):
    return text
  return f'{text} ± {std:.{digits}f}'


def tau_a_text(run: report.Run) -> str:
  return f'τa {fmt(tau_a(run))} (per seed {fmt(*tau_a_per_seed(run))})'


def accuracy_text(stats: tuple[float, float | None]) -> str:
  return fmt(*stats, digits=1, signed=False) + ' %'


# ---------------------------------------------------------------------------
# Run settings, read from the runs' files


def data_source_text(config: dict) -> str:
  """The images a run used, from config.json: '`cifar10_q75.npz` (real CIFAR-10, ...)'."""
  source = config.get('data.source')
  dataset = {'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100', 'imagenet16': 'ImageNet16-120'}.get(
      config.get('data.dataset', 'cifar10'), config.get('data.dataset'))
  if source == 'tfds':
    text = f'{dataset} (tfds, original images)'
  elif source == 'download':
    text = f'{dataset} (official archive, original images)'
  elif source == 'npz':
    name = os.path.basename(str(config.get('data.path', '')))
    text = f'`{name}`'
    if 'q75' in name:
      text += f' (real {dataset}, JPEG q75 copy)'
  elif source == 'synthetic':
    text = 'synthetic images (not CIFAR-10)'
  else:
    text = f'data.source={source}'
  return text


def data_text(config: dict) -> str:
  """What the run trained and validated on, from config.json."""
  text = data_source_text(config)
  subset = config.get('data.train_subset')
  if subset:
    text += f', first {subset} training images'
  return (text + f', {config.get("data.val_size")} validation images '
          f'(split seed {config.get("data.split_seed")})')


def bench_text(run: report.Run) -> str:
  bench = run.metrics.get('bench', {})
  return f'`{bench.get("metric")}` (table sha256 {str(bench.get("sha256"))[:12]})'


def settings_key(run: report.Run) -> tuple:
  """What runs must share to be compared: epochs, data, bench column and table."""
  return (run.config.get('train.epochs'), data_text(run.config), bench_text(run))


def seeds_text(seeds: Sequence[str]) -> str:
  return f'{len(seeds)} ({", ".join(seeds)})'


def settings_lines(runs: Sequence[report.Run]) -> list[str]:
  """One line per distinct value of epochs, seeds, data and bench column."""
  def values(text_of):
    seen = {}
    for run in runs:
      seen.setdefault(text_of(run), []).append(run.name)
    if len(seen) == 1:
      return next(iter(seen))
    return '; '.join(f'{v} ({", ".join(f"`{n}`" for n in names)})' for v, names in seen.items())
  return [
      f'- epochs (`train.epochs`): {values(lambda r: str(r.config.get("train.epochs")))}',
      f'- seeds: {values(lambda r: seeds_text(r.seeds))}',
      f'- data: {values(lambda r: data_text(r.config))}',
      f'- bench column (ground truth): {values(bench_text)}',
  ]


# ---------------------------------------------------------------------------
# The claims


@dataclasses.dataclass(frozen=True)
class Outcome:
  holds: bool | None  # None: the rule cannot decide yet
  ours: str


@dataclasses.dataclass(frozen=True)
class Claim:
  id: str
  paper: str
  rule: str
  runs: tuple[str, ...]  # the runs the rule reads
  check: Callable[[dict[str, report.Run]], Outcome]
  needs_all: bool = True  # False: check() itself decides with some runs missing
  compares: bool = True  # the runs are compared: they must share epochs, data, bench


@dataclasses.dataclass(frozen=True)
class Finding:
  claim: Claim
  verdict: str  # one of VERDICTS
  ours: str
  note: str  # why not yet run, or ''


def _smallest_and_largest_n(run: report.Run) -> tuple[int, int]:
  sizes = top_sizes(run)
  return sizes[0], sizes[-1]


def check_f1(runs) -> Outcome:
  run = runs['s-all']
  low, high = _smallest_and_largest_n(run)
  a_low, a_high = a_n(run, low), a_n(run, high)
  gap = a_low[0] - a_high[0]
  holds = abs(tau_a(run)) <= TAU_A_NEAR_ZERO and abs(gap) <= SAME_ACCURACY
  return Outcome(holds, f'{tau_a_text(run)}; A_{low} {accuracy_text(a_low)}, '
                 f'A_{high} {accuracy_text(a_high)} (difference {gap:+.2f})')


def check_f2(runs) -> Outcome:
  parts = [f'`{name}` {tau_a_text(runs[name])}' for name in runs]
  holds = all(tau_a(run) <= -TAU_A_EXTREME for run in runs.values())
  return Outcome(holds, '; '.join(parts))


def check_f3(runs) -> Outcome:
  skip = runs['s-mask_skip_connect']
  others = {n: r for n, r in runs.items() if n != skip.name}
  worst_other = max(tau_a(r) for r in others.values())
  holds = tau_a(skip) >= TAU_A_EXTREME and tau_a(skip) >= worst_other
  other_text = ', '.join(f'`{n}` {fmt(tau_a(r))}' for n, r in others.items())
  return Outcome(holds, f'`{skip.name}` {tau_a_text(skip)}; other single masks: τa '
                 f'{other_text}')


def check_f4(runs) -> Outcome:
  conv, base = runs['s-mask_nor_conv_3x3'], runs['s-all']
  holds = tau_a(conv) > tau_a(base) + TAU_A_MARGIN
  return Outcome(holds, f'`{conv.name}` {tau_a_text(conv)}; `{base.name}` {tau_a_text(base)}')


def check_f5(runs) -> Outcome:
  both = runs['s-mask_none+avg_pool_3x3']
  singles = [runs['s-mask_none'], runs['s-mask_avg_pool_3x3']]
  holds = (tau_a(both) <= -TAU_A_EXTREME
           and all(mean_top_kendall_tau(both) > mean_top_kendall_tau(r) for r in singles))
  kts = '; '.join(f'`{r.name}` {fmt(mean_top_kendall_tau(r))}' for r in [both] + singles)
  return Outcome(holds, f'`{both.name}` {tau_a_text(both)}; Kendall tau averaged over the '
                 f'top-N groups: {kts}')


def check_f6(runs) -> Outcome:
  pairs = (('s-all', 's-uniform-all'), ('s-mask_none', 's-uniform-mask_none'))
  fair_ok = all(tau_a(runs[f]) <= tau_a(runs[u]) + TAU_A_MARGIN for f, u in pairs)
  uniform_higher = all(random_accuracy(runs[u])[0] > random_accuracy(runs[f])[0]
                       for f, u in pairs)
  parts = []
  for fair, uniform in pairs:
    parts.append(f'`{fair}` τa {fmt(tau_a(runs[fair]))}, accuracy '
                 f'{accuracy_text(random_accuracy(runs[fair]))} against `{uniform}` τa '
                 f'{fmt(tau_a(runs[uniform]))}, accuracy '
                 f'{accuracy_text(random_accuracy(runs[uniform]))}')
  return Outcome(fair_ok and uniform_higher, '; '.join(parts))


def highest_top_kendall_tau(run: report.Run) -> tuple[int, tuple[float, float | None]]:
  return max(top_kendall_taus(run).items(), key=lambda item: item[1][0])


def check_f7(runs) -> Outcome:
  """Refuted by one run with a high Kendall tau; holds only once every run is in."""
  if not runs:
    return Outcome(None, MISSING)
  best = {name: highest_top_kendall_tau(run) for name, run in runs.items()}
  name, (n, stats) = max(best.items(), key=lambda item: item[1][1][0])
  high = [f'`{k}` (top{m} {fmt(*s)})' for k, (m, s) in best.items() if s[0] >= HIGH_KENDALL_TAU]
  ours = f'highest seed-mean Kendall tau in a top-N group: `{name}` top{n} {fmt(*stats)}'
  if high:
    return Outcome(False, ours + '; high in ' + ', '.join(high))
  complete = len(runs) == len(QUEUE)
  return Outcome(True if complete else None, ours + f' ({len(runs)} of {len(QUEUE)} runs)')


def check_f8(runs) -> Outcome:
  parts = [f'`{name}` {accuracy_text(random_accuracy(run))}' for name, run in runs.items()]
  holds = any(random_accuracy(run)[0] <= NEAR_CHANCE for run in runs.values())
  return Outcome(holds, 'super-net accuracy on the random group: ' + '; '.join(parts))


CLAIMS = (
    Claim('F1', 'All ops (baseline): A_N the same for top-10 as for top-500, τa ≈ 0.',
          '`s-all`: -1/3 <= τa <= 1/3, and A_N of the smallest and of the largest N '
          f'within {SAME_ACCURACY:g} point of each other.', ('s-all',), check_f1),
    Claim('F2', 'Zero masked: τa = -1; Pool masked: τa = -1.',
          f'τa <= -{TAU_A_EXTREME} for `s-mask_none` and for `s-mask_avg_pool_3x3`.',
          ('s-mask_none', 's-mask_avg_pool_3x3'), check_f2),
    Claim('F3', 'Skip masked: τa = +1, the most harmful single mask.',
          f'`s-mask_skip_connect`: τa >= +{TAU_A_EXTREME}, and no lower than the τa of '
          'every other single-op mask of the queue (Zero, Pool, 3x3 conv).',
          ('s-mask_skip_connect', 's-mask_none', 's-mask_avg_pool_3x3',
           's-mask_nor_conv_3x3'), check_f3),
    Claim('F4', 'Masking a convolution is harmful.',
          f'τa of `s-mask_nor_conv_3x3` above that of `s-all` by more than {TAU_A_MARGIN} '
          '(1x1-conv masking is not in the queue).',
          ('s-mask_nor_conv_3x3', 's-all'), check_f4),
    Claim('F5', 'Zero+Pool masked (and arguably Zero+Skip) better still.',
          f'`s-mask_none+avg_pool_3x3`: τa <= -{TAU_A_EXTREME}, and its Kendall tau averaged '
          'over the top-N groups above those of `s-mask_none` and `s-mask_avg_pool_3x3` '
          '(Zero+Skip is not in the queue).',
          ('s-mask_none+avg_pool_3x3', 's-mask_none', 's-mask_avg_pool_3x3'), check_f5),
    Claim('F6', 'Strictly fair >= uniform in τa on small; uniform gives higher absolute '
          'accuracy.',
          f'For all ops and Zero masked: τa(fair) <= τa(uniform) + {TAU_A_MARGIN}, and the '
          'random-group super-net accuracy of uniform above that of fair.',
          ('s-all', 's-uniform-all', 's-mask_none', 's-uniform-mask_none'), check_f6),
    Claim('F7', 'No experiment shows a high Kendall tau within the top-N groups.',
          f'No run has a seed-mean Kendall tau >= {HIGH_KENDALL_TAU} in any top-N group; '
          'one such run refutes it, holding needs every run of the queue.',
          QUEUE, check_f7, needs_all=False, compares=False),
    Claim('F8', 'Medium super-networks: several subsets fail to generalise (validation '
          'accuracy near chance).',
          f'At least one of `m-all`, `m-mask_none` has a seed-mean super-net accuracy on '
          f'its random group <= {NEAR_CHANCE:g} % (chance: {CHANCE_ACCURACY:g} %).',
          ('m-all', 'm-mask_none'), check_f8, compares=False),
)


def mixed_settings(runs: Sequence[report.Run]) -> str:
  """'' when the runs share epochs, data and bench column; else what differs."""
  keys = {settings_key(r) for r in runs}
  if len(keys) <= 1:
    return ''
  for label, i in (('epochs', 0), ('data', 1), ('bench column', 2)):
    values = {settings_key(r)[i] for r in runs}
    if len(values) > 1:
      return (f'the runs differ in {label} ('
              + ', '.join(f'`{r.name}` {settings_key(r)[i]}' for r in runs)
              + '): the comparison needs runs with one setting')
  return 'the runs differ in their settings'


def needs_text(lacking: Sequence[str]) -> str:
  if len(lacking) > 4:
    return f'needs {len(lacking)} more runs of the queue'
  return 'needs ' + ', '.join(f'`{n}`' for n in lacking)


def decide(claim: Claim, evidence: Evidence) -> Finding:
  """The claim's verdict by its rule, or 'not yet run' with the reason."""
  runs = {r.name: r for r in evidence.present(claim.runs)}
  lacking = [n for n in claim.runs if n not in runs]
  if claim.needs_all and lacking:
    return Finding(claim, 'not yet run', MISSING, needs_text(lacking))
  differs = mixed_settings(list(runs.values())) if claim.compares else ''
  if differs:
    return Finding(claim, 'not yet run', MISSING, differs)
  outcome = claim.check(runs)
  if outcome.holds is None:
    return Finding(claim, 'not yet run', outcome.ours, needs_text(lacking))
  return Finding(claim, 'holds' if outcome.holds else 'does not hold', outcome.ours, '')


def findings(evidence: Evidence) -> list[Finding]:
  return [decide(claim, evidence) for claim in CLAIMS]


# ---------------------------------------------------------------------------
# Figures


def _new_figure(width: float, height: float) -> Figure:
  figure = Figure(figsize=(width, height), layout='constrained')
  FigureCanvasAgg(figure)  # Agg, without pyplot's global state
  return figure


def save_png(figure: Figure, folder: str, stem: str) -> str:
  """folder/stem.png, without the matplotlib version stamp (stable bytes in git)."""
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f'{stem}.png')
  figure.savefig(path, dpi=110, metadata={'Software': None})
  return path


def settings_title(runs: Sequence[report.Run]) -> str:
  epochs = sorted({str(r.config.get('train.epochs')) for r in runs})
  metric = sorted({str(r.metrics.get('bench', {}).get('metric')) for r in runs})
  data = sorted({data_source_text(r.config).replace('`', '') for r in runs})
  return (f'{"/".join(epochs)} epochs, {" / ".join(data)}; ground truth '
          f'{"/".join(metric)}; mean ± std over seeds')


def fig4_figure(runs: Sequence[report.Run]) -> Figure:
  """Fig. 4 of the paper: A_N and Kendall tau against N, one row per size present."""
  rows = [[r for r in runs if r.size == size] for size in SIZE_NAMES]
  rows = [row for row in rows if row]
  figure = _new_figure(12.0, 3.8 * len(rows))
  axes = figure.subplots(len(rows), 2, squeeze=False)
  palette = matplotlib.colormaps['tab10'].colors  # the queue has 10 runs
  color_of = {run.name: palette[i % len(palette)] for i, run in enumerate(runs)}
  for (ax_acc, ax_kt), row in zip(axes, rows):
    for run in row:
      sizes = top_sizes(run)
      color = color_of[run.name]
      for ax, field in ((ax_acc, 'mean_supernet_acc'), (ax_kt, 'kendall_tau')):
        stats = [report.group_stat(run, f'top{n}', field) for n in sizes]
        mean = np.asarray([m for m, _ in stats])
        ax.plot(sizes, mean, marker='o', ms=3, color=color,
                label=f'{run.name} (τa {tau_a(run):+.2f})')
        if all(s is not None for _, s in stats):
          std = np.asarray([s for _, s in stats])
          ax.fill_between(sizes, mean - std, mean + std, color=color, alpha=0.15, lw=0)
        ax.axhline(report.group_stat(run, 'random', field)[0], color=color, ls=':', lw=1)
    size = SIZE_NAMES[row[0].size]
    ax_acc.set_ylabel(f'{size}: A_N (%)')
    ax_kt.set_ylabel(f'{size}: Kendall tau')
    sizes = sorted({n for run in row for n in top_sizes(run)})
    for ax in (ax_acc, ax_kt):
      ax.set_xscale('log')
      ax.set_xticks(sizes, [str(n) for n in sizes])
      ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
      ax.set_xlabel('N (top-N bench archs); dotted: random group')
      ax.grid(alpha=0.3)
    ax_kt.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.02, 1.0))
  figure.suptitle(f'Fig. 4-style: {settings_title(runs)}', fontsize=10)
  return figure


def full_space_figure(full: dict[str, FullSpace], runs: dict[str, report.Run]) -> Figure:
  """Kendall tau and Spearman over each run's whole subset, beside the anchors."""
  names = list(full)
  figure = _new_figure(max(8.0, 1.2 * len(names) + 5.0), 5.2)
  axes = figure.subplots(1, 2, squeeze=False)[0]
  x = np.arange(len(names))
  labels = [f'{n} ({len(full[n].seeds)} seed{"s" * (len(full[n].seeds) > 1)})' for n in names]
  for ax, field, label in ((axes[0], 'kendall_tau', 'Kendall tau'),
                           (axes[1], 'spearman', 'Spearman')):
    mean = np.asarray([getattr(full[n], field)[0] for n in names])
    std = np.asarray([getattr(full[n], field)[1] or 0.0 for n in names])
    ax.errorbar(x, mean, yerr=std, fmt='o', color='C0', capsize=3)
    for anchor, style in zip(ANCHORS, ('--', ':')):
      ax.axhline(getattr(anchor, field), color='C3', ls=style, lw=1.2)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xticks(x, labels, fontsize=7, rotation=30, ha='right')
    ax.set_ylabel(f'{label}, whole (masked) subset')
    ax.grid(alpha=0.3)
  handles = [matplotlib.lines.Line2D([], [], color='C0', marker='o', ls='',
                                     label='run (mean ± std over its seeds)')]
  handles += [matplotlib.lines.Line2D([], [], color='C3', ls=style,
                                      label=f'{a.label}: Kendall tau {a.kendall_tau:.3f}, '
                                            f'Spearman {a.spearman:.3f}')
              for a, style in zip(ANCHORS, ('--', ':'))]
  figure.legend(handles=handles, loc='outside lower center', fontsize=8)
  shown = [runs[n] for n in names if n in runs]
  suffix = f'\n{settings_title(shown)}' if shown else ''
  figure.suptitle(f'Whole-space ranking against the anchors{suffix}', fontsize=10)
  return figure


# ---------------------------------------------------------------------------
# The page's generated parts


def _link(path: str, page_dir: str, alt: str) -> str:
  return f'![{alt}]({os.path.relpath(path, page_dir).replace(os.sep, "/")})'


def runs_section(evidence: Evidence) -> list[str]:
  """The queue: each run's state and settings, from its files."""
  lines = [f'{len(evidence.runs)} of {len(QUEUE)} runs of the queue have results.', '',
           '| # | run | state | epochs | seeds | data | bench column | device | commit |',
           '|---|---|---|---|---|---|---|---|---|']
  for i, name in enumerate(QUEUE, start=1):
    run = evidence.runs.get(name)
    if run is None:
      reason = evidence.absent.get(name, 'no run folder')
      state = 'not yet run' if reason == 'no run folder' else reason.replace('|', '/')
      lines.append(f'| {i} | `{name}` | {state} |' + f' {MISSING} |' * 6)
      continue
    info = evidence.run_info.get(name, {})
    jax_version = (info.get('packages') or {}).get('jax')
    device = info.get('device_kind', MISSING) + (f', jax {jax_version}' if jax_version else '')
    commit = f'`{info["git_commit"]}`' if info.get('git_commit') else MISSING
    lines.append(f'| {i} | `{name}` | results (`{run.eval_name}`) | '
                 f'{run.config.get("train.epochs")} | {seeds_text(run.seeds)} | '
                 f'{data_text(run.config)} | {bench_text(run)} | {device} | {commit} |')
  return lines


def claims_section(evidence: Evidence, found: Sequence[Finding]) -> list[str]:
  counts = {v: sum(f.verdict == v for f in found) for v in VERDICTS}
  lines = [', '.join(f'{counts[v]} {v}' for v in VERDICTS) + '.', '']
  runs = list(evidence.runs.values())
  if runs:
    lines += ['Settings of the runs these verdicts read:', ''] + settings_lines(runs) + ['']
  else:
    lines += ['No run of the queue has results under `results/paper/` yet, so no claim '
              'can be checked: every verdict is "not yet run" and no number is shown.', '']
  lines += ['| id | paper | rule (holds when) | ours (mean ± std over seeds) | verdict |',
            '|---|---|---|---|---|']
  for f in found:
    verdict = f'**{f.verdict}**' + (f' ({f.note})' if f.note else '')
    lines.append(f'| {f.claim.id} | {f.claim.paper} | {f.claim.rule} | {f.ours} | {verdict} |')
  return lines


def figure4_section(evidence: Evidence, page_dir: str, figures_dir: str) -> list[str]:
  runs = [evidence.runs[n] for n in QUEUE if n in evidence.runs]
  if not runs:
    return ['Nothing drawn yet: no run of the queue has results.']
  path = save_png(fig4_figure(runs), figures_dir, 'fig4_accuracy_tau')
  return [_link(path, page_dir, 'A_N and Kendall tau against N, runs of the queue'), '',
          'Runs drawn: ' + ', '.join(f'`{r.name}`' for r in runs) + '.', ''] + settings_lines(runs)


def full_space_section(evidence: Evidence, page_dir: str, figures_dir: str) -> list[str]:
  anchors = '; '.join(f'{a.label}: Kendall tau {a.kendall_tau:.3f}, Spearman {a.spearman:.3f}'
                      for a in ANCHORS)
  lines = [f'Anchors over all 15625 archs: {anchors}.', '']
  full = {n: evidence.full_space[n] for n in QUEUE if n in evidence.full_space}
  if not full:
    return lines + ['No run has a whole-space evaluation (`eval.scope=all`) yet: nothing '
                    'to tabulate or draw.']
  lines += ['| run | evaluation | seeds | archs scored | Kendall tau | Spearman | epochs | '
            'data | bench column |', '|---|---|---|---|---|---|---|---|---|']
  for name, entry in full.items():
    run = evidence.runs.get(name)
    settings = ([str(run.config.get('train.epochs')), data_text(run.config), bench_text(run)]
                if run else [MISSING] * 3)
    lines.append(f'| `{name}` | `{entry.eval_name}` | {seeds_text(entry.seeds)} | '
                 f'{entry.archs} | {fmt(*entry.kendall_tau, digits=3, signed=False)} | '
                 f'{fmt(*entry.spearman, digits=3, signed=False)} | '
                 + ' | '.join(settings) + ' |')
  path = save_png(full_space_figure(full, evidence.runs), figures_dir, 'full_space_anchors')
  return lines + ['', 'A masked run ranks its subset only (e.g. 4096 archs with one op '
                  'masked), the anchors the whole space.', '',
                  _link(path, page_dir, 'whole-space Kendall tau and Spearman against the '
                        'anchors')]


SECTIONS = ('runs', 'claims', 'figure4', 'full_space')


def generated_sections(evidence: Evidence, page_dir: str, figures_dir: str) -> dict:
  found = findings(evidence)
  return {
      'runs': runs_section(evidence),
      'claims': claims_section(evidence, found),
      'figure4': figure4_section(evidence, page_dir, figures_dir),
      'full_space': full_space_section(evidence, page_dir, figures_dir),
  }


def _marker_pattern(name: str) -> re.Pattern:
  return re.compile(rf'(<!-- generated:{name} -->\n)(.*?)(<!-- end generated:{name} -->)',
                    re.DOTALL)


def fill(page: str, sections: dict[str, list[str]]) -> str:
  """The page with each marked part replaced; ReproductionError on a missing marker."""
  for name, lines in sections.items():
    pattern = _marker_pattern(name)
    count = len(pattern.findall(page))
    if count != 1:
      raise ReproductionError(
          f'the page has {count} `<!-- generated:{name} -->` ... `<!-- end generated:{name} '
          f'-->` pairs; it needs exactly one of each of: {", ".join(SECTIONS)}')
    body = '\n'.join(lines) + '\n'
    page = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(3), page)
  return page


def write_page(root: str, page_path: str, figures_dir: str) -> list[Finding]:
  """Regenerate the page's marked parts (and its figures) from the runs under root."""
  try:
    with open(page_path, encoding='utf-8') as f:
      page = f.read()
  except OSError as e:
    raise ReproductionError(f'--page={page_path}: cannot read ({e.strerror})') from None
  evidence = gather(root)
  page_dir = os.path.dirname(os.path.abspath(page_path))
  sections = generated_sections(evidence, page_dir, os.path.abspath(figures_dir))
  updated = fill(page, sections)
  if updated != page:
    with open(page_path, 'w', encoding='utf-8') as f:
      f.write(updated)
  return findings(evidence)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m spos_jax.reproduction', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--root', default=os.path.join('results', 'paper'),
                      help='folder of the run folders (default: results/paper)')
  parser.add_argument('--page', default='REPRODUCTION.md', help='page to regenerate')
  parser.add_argument('--figures', default=FIGURES_DIR,
                      help=f'folder of the page\'s figures (default: {FIGURES_DIR})')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    found = write_page(args.root, args.page, args.figures)
  except ReproductionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  counts = {v: sum(f.verdict == v for f in found) for v in VERDICTS}
  print(f'{args.page}: ' + ', '.join(f'{counts[v]} {v}' for v in VERDICTS))
  return 0


if __name__ == '__main__':
  sys.exit(main())
