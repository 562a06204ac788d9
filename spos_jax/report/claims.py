"""The paper's claims F1-F8 against the queue's runs: the evidence and each verdict.

ROOT holds one folder per run of QUEUE, named as the sweep launcher names them
(launch/grid.py). Each claim carries the rule that decides its verdict ('holds',
'does not hold', 'not yet run'). A run counts once its groups evaluation
(results/running-groups, or a whole-space evaluation of every seed) passes
runs.load_run's checks. Runs that a claim compares must share epochs, data and bench
column, else the claim waits for runs that do. Every setting printed (epochs, seeds,
data, bench column) is read from the runs' files, never typed in.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Sequence

import numpy as np

from spos_jax.report import runs as runs_lib
from spos_jax.report import stats

# The queue of runs in order of value: small (C=32, N=2) subsets, uniform sampling,
# medium (C=64, N=4). launch/reproduce_queue.sh runs them in this order.
QUEUE = (
    's-all', 's-mask_none', 's-mask_avg_pool_3x3', 's-mask_skip_connect',
    's-mask_none+avg_pool_3x3', 's-mask_nor_conv_3x3', 's-uniform-all',
    's-uniform-mask_none', 'm-all', 'm-mask_none')
GROUPS_EVAL = 'running-groups'  # the paper's groups, training's BN statistics
ALL_SCOPE_EVAL = 'running-all'  # every seed over the whole subset: holds the groups too
GROUPS_BN_MODE = 'running'  # the BN mode of both
VERDICTS = ('holds', 'does not hold', 'not yet run')
MISSING = '–'


@dataclasses.dataclass(frozen=True)
class Anchor:
  """An outside result over all 15625 archs of NB201."""
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
  """Kendall tau and Spearman of one run over its whole (masked) subset, or over a
  uniform random sample of it when no whole-subset evaluation exists."""
  eval_name: str
  seeds: tuple[str, ...]
  archs: int  # archs ranked
  kendall_tau: tuple[float, float | None]  # mean, std over seeds
  spearman: tuple[float, float | None]
  subset_archs: int = 0  # archs in the subset; 0 when archs is the whole subset
  unique: bool = False  # archs are isomorphism classes of the subset_archs (eval.scope=unique)

  @property
  def sampled(self) -> bool:
    return bool(self.subset_archs) and self.archs < self.subset_archs and not self.unique

  @property
  def archs_text(self) -> str:
    if self.unique:
      return f'{self.archs} (unique archs of {self.subset_archs})'
    return (f'{self.archs} (random sample of {self.subset_archs})' if self.sampled
            else str(self.archs))


@dataclasses.dataclass
class Evidence:
  """What ROOT holds for the queue: checked runs, whole-space numbers, absences."""
  runs: dict[str, runs_lib.Run]
  full_space: dict[str, FullSpace]
  run_info: dict[str, dict]
  absent: dict[str, str]  # queue name -> why it has no usable groups evaluation
  unique: dict[str, FullSpace] = dataclasses.field(default_factory=dict)

  def present(self, names: Sequence[str]) -> list[runs_lib.Run]:
    return [self.runs[n] for n in names if n in self.runs]


def groups_evaluation(evaluations: dict[str, dict]) -> str | None:
  """The evaluation that holds the paper's groups for every seed, if any."""
  for name in (GROUPS_EVAL, ALL_SCOPE_EVAL):
    if name in evaluations:
      return name
  return None


def _seed_means(summary: dict, group: str) -> dict | None:
  """Seed mean and std of Kendall tau and Spearman in one group; None when a seed
  lacks its numbers (not a usable ranking)."""
  entry = (summary.get('groups') or {}).get(group)
  seeds = tuple(str(s) for s in summary.get('seeds', []))
  if not entry or not seeds:
    return None
  try:
    return {field: stats.mean_std([entry['per_seed'][s][field] for s in seeds])
            for field in ('kendall_tau', 'spearman')}
  except (KeyError, TypeError):
    return None


def _other_bn_mode(summary: dict) -> bool:
  """Whether an evaluation's BN mode is not the groups evaluation's (training's running
  statistics): a rescoring in another mode ranks with another estimator."""
  return (summary.get('config') or {}).get('eval.bn_mode', GROUPS_BN_MODE) != GROUPS_BN_MODE


def whole_space_of(evaluations: dict[str, dict]) -> FullSpace | None:
  """The whole-subset ranking with the most seeds (eval.scope=all), if any.

  A one-seed whole-space evaluation of a five-seed run is fine here: the numbers
  come from its own metrics.json and seeds. An evaluation that scored fewer archs
  than its subset holds is not whole-space, and one scored by a zero-cost proxy or
  in another BN mode is not the estimator the verdicts read: all are skipped.
  """
  best = None
  for name, summary in evaluations.items():
    config = summary.get('config') or {}
    if (config.get('eval.scope') != 'all' or runs_lib.is_proxy_evaluation(name, summary)
        or _other_bn_mode(summary)):
      continue
    archs = int(summary.get('evaluated_archs', -1))
    values = _seed_means(summary, 'all')
    if values is None or archs != (summary.get('bench') or {}).get('archs_in_subset'):
      continue
    candidate = FullSpace(name, tuple(str(s) for s in summary['seeds']), archs,
                          values['kendall_tau'], values['spearman'])
    if best is None or len(candidate.seeds) > len(best.seeds):
      best = candidate
  return best


def random_sample_of(evaluations: dict[str, dict]) -> FullSpace | None:
  """The largest random group of an evaluation made beside the groups one, if any.

  The groups evaluation's own random group is a point of Fig. 4, not a sample of the
  space: only a rescoring under another name (e.g. `eval.random_size=1000`) counts.
  Proxy rankings and rescorings in another BN mode are not the estimator the
  verdicts read, and are skipped; so is a unique-scope evaluation, whose random group
  samples isomorphism classes, not archs.
  """
  best = None
  for name, summary in evaluations.items():
    if (name in (GROUPS_EVAL, ALL_SCOPE_EVAL) or runs_lib.is_proxy_evaluation(name, summary)
        or _other_bn_mode(summary)
        or (summary.get('config') or {}).get('eval.scope') == 'unique'):
      continue
    values = _seed_means(summary, 'random')
    subset = (summary.get('bench') or {}).get('archs_in_subset')
    if values is None or not subset:
      continue
    seeds = tuple(str(s) for s in summary['seeds'])
    archs = int(summary['groups']['random']['per_seed'][seeds[0]]['n'])
    candidate = FullSpace(name, seeds, archs, values['kendall_tau'], values['spearman'],
                          int(subset))
    if best is None or (candidate.archs, len(candidate.seeds)) > (best.archs,
                                                                   len(best.seeds)):
      best = candidate
  return best


def unique_of(evaluations: dict[str, dict]) -> FullSpace | None:
  """The ranking of one arch per isomorphism class (eval.scope=unique) with the most
  seeds, if any; proxy rankings and rescorings in another BN mode are skipped."""
  best = None
  for name, summary in evaluations.items():
    config = summary.get('config') or {}
    if (config.get('eval.scope') != 'unique' or runs_lib.is_proxy_evaluation(name, summary)
        or _other_bn_mode(summary)):
      continue
    values = _seed_means(summary, 'all')
    classes_of = (summary.get('bench') or {}).get('archs_in_classes')
    if values is None or not classes_of:
      continue
    candidate = FullSpace(name, tuple(str(s) for s in summary['seeds']),
                          int(summary['evaluated_archs']), values['kendall_tau'],
                          values['spearman'], int(classes_of), unique=True)
    if best is None or len(candidate.seeds) > len(best.seeds):
      best = candidate
  return best


def full_space_of(evaluations: dict[str, dict]) -> FullSpace | None:
  """The whole-subset ranking if the run has one, else its largest random sample."""
  return whole_space_of(evaluations) or random_sample_of(evaluations)


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
    evaluations = runs_lib.read_evaluations(folder)
    full = full_space_of(evaluations)
    if full is not None:
      evidence.full_space[name] = full
    unique = unique_of(evaluations)
    if unique is not None:
      evidence.unique[name] = unique
    evidence.run_info[name] = runs_lib.read_run_info(folder)
    chosen = groups_evaluation(evaluations)
    if chosen is None:
      evidence.absent[name] = runs_lib.missing_reason(folder, GROUPS_EVAL)
      continue
    try:
      evidence.runs[name] = runs_lib.load_run(folder, chosen)
    except runs_lib.RunError as e:
      evidence.absent[name] = f'refused: {e}'
  return evidence


# ---------------------------------------------------------------------------
# Numbers of a run


def tau_a_per_seed(run: runs_lib.Run) -> tuple[float, float | None]:
  return stats.mean_std([run.metrics['tau_a']['per_seed'][s] for s in run.seeds])


def a_n(run: runs_lib.Run, n: int) -> tuple[float, float | None]:
  """A_N: mean super-net accuracy (%) over the bench's top-N archs, over seeds."""
  return stats.group_stat(run, f'top{n}', 'mean_supernet_acc')


def random_accuracy(run: runs_lib.Run) -> tuple[float, float | None]:
  """Mean super-net accuracy (%) over the run's random sample of its subset."""
  return stats.group_stat(run, 'random', 'mean_supernet_acc')


def top_kendall_taus(run: runs_lib.Run) -> dict[int, tuple[float, float | None]]:
  """Kendall tau within each top-N group: mean, std over seeds."""
  return {n: stats.group_stat(run, f'top{n}', 'kendall_tau') for n in stats.top_sizes(run)}


def mean_top_kendall_tau(run: runs_lib.Run) -> float:
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


def tau_a_text(run: runs_lib.Run) -> str:
  return f'τa {fmt(stats.tau_a(run))} (per seed {fmt(*tau_a_per_seed(run))})'


def accuracy_text(value: tuple[float, float | None]) -> str:
  return fmt(*value, digits=1, signed=False) + ' %'


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


def bench_text(run: runs_lib.Run) -> str:
  bench = run.metrics.get('bench', {})
  return f'`{bench.get("metric")}` (table sha256 {str(bench.get("sha256"))[:12]})'


def settings_key(run: runs_lib.Run) -> tuple:
  """What runs must share to be compared: epochs, data, bench column and table."""
  return (run.config.get('train.epochs'), data_text(run.config), bench_text(run))


def seeds_text(seeds: Sequence[str]) -> str:
  return f'{len(seeds)} ({", ".join(seeds)})'


def settings_lines(runs: Sequence[runs_lib.Run]) -> list[str]:
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
  check: Callable[[dict[str, runs_lib.Run]], Outcome]
  needs_all: bool = True  # False: check() itself decides with some runs missing
  compares: bool = True  # the runs are compared: they must share epochs, data, bench


@dataclasses.dataclass(frozen=True)
class Finding:
  claim: Claim
  verdict: str  # one of VERDICTS
  ours: str
  note: str  # why not yet run, or ''


def _smallest_and_largest_n(run: runs_lib.Run) -> tuple[int, int]:
  sizes = stats.top_sizes(run)
  return sizes[0], sizes[-1]


def check_f1(runs) -> Outcome:
  run = runs['s-all']
  low, high = _smallest_and_largest_n(run)
  a_low, a_high = a_n(run, low), a_n(run, high)
  gap = a_low[0] - a_high[0]
  holds = abs(stats.tau_a(run)) <= TAU_A_NEAR_ZERO and abs(gap) <= SAME_ACCURACY
  return Outcome(holds, f'{tau_a_text(run)}; A_{low} {accuracy_text(a_low)}, '
                 f'A_{high} {accuracy_text(a_high)} (difference {gap:+.2f})')


def check_f2(runs) -> Outcome:
  parts = [f'`{name}` {tau_a_text(runs[name])}' for name in runs]
  holds = all(stats.tau_a(run) <= -TAU_A_EXTREME for run in runs.values())
  return Outcome(holds, '; '.join(parts))


def check_f3(runs) -> Outcome:
  skip = runs['s-mask_skip_connect']
  others = {n: r for n, r in runs.items() if n != skip.name}
  worst_other = max(stats.tau_a(r) for r in others.values())
  holds = stats.tau_a(skip) >= TAU_A_EXTREME and stats.tau_a(skip) >= worst_other
  other_text = ', '.join(f'`{n}` {fmt(stats.tau_a(r))}' for n, r in others.items())
  return Outcome(holds, f'`{skip.name}` {tau_a_text(skip)}; other single masks: τa '
                 f'{other_text}')


def check_f4(runs) -> Outcome:
  conv, base = runs['s-mask_nor_conv_3x3'], runs['s-all']
  holds = stats.tau_a(conv) > stats.tau_a(base) + TAU_A_MARGIN
  return Outcome(holds, f'`{conv.name}` {tau_a_text(conv)}; `{base.name}` {tau_a_text(base)}')


def check_f5(runs) -> Outcome:
  both = runs['s-mask_none+avg_pool_3x3']
  singles = [runs['s-mask_none'], runs['s-mask_avg_pool_3x3']]
  holds = (stats.tau_a(both) <= -TAU_A_EXTREME
           and all(mean_top_kendall_tau(both) > mean_top_kendall_tau(r) for r in singles))
  kts = '; '.join(f'`{r.name}` {fmt(mean_top_kendall_tau(r))}' for r in [both] + singles)
  return Outcome(holds, f'`{both.name}` {tau_a_text(both)}; Kendall tau averaged over the '
                 f'top-N groups: {kts}')


def check_f6(runs) -> Outcome:
  pairs = (('s-all', 's-uniform-all'), ('s-mask_none', 's-uniform-mask_none'))
  fair_ok = all(stats.tau_a(runs[f]) <= stats.tau_a(runs[u]) + TAU_A_MARGIN for f, u in pairs)
  uniform_higher = all(random_accuracy(runs[u])[0] > random_accuracy(runs[f])[0]
                       for f, u in pairs)
  parts = []
  for fair, uniform in pairs:
    parts.append(f'`{fair}` τa {fmt(stats.tau_a(runs[fair]))}, accuracy '
                 f'{accuracy_text(random_accuracy(runs[fair]))} against `{uniform}` τa '
                 f'{fmt(stats.tau_a(runs[uniform]))}, accuracy '
                 f'{accuracy_text(random_accuracy(runs[uniform]))}')
  return Outcome(fair_ok and uniform_higher, '; '.join(parts))


def highest_top_kendall_tau(run: runs_lib.Run) -> tuple[int, tuple[float, float | None]]:
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


def mixed_settings(runs: Sequence[runs_lib.Run]) -> str:
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
