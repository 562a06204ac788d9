"""A run's ranking results: predictions.csv and metrics.json (docs/method.md, 'Metrics').

predictions.csv  seed, nb201_index, arch, <score column>, bench_acc: every scored arch;
                 with eval.scope=unique also class_id, class_size (each row one
                 isomorphism class: bench.unique_classes)
metrics.json     per group (top10..top500, random, all): correlations and mean
                 scores per seed and as mean/std over seeds; tau_a; precision@K;
                 the top-1 arch (NB201 index, arch string, bench rank, regret); the
                 scored checkpoint step; the evaluation identity; the config and bench.
Both files are written atomically; metrics.json last, so its presence means the
evaluation completed.

One convention for accuracies: super-net and bench accuracies are percentages
(0..100); precision@K is a share (0..1), regret is in accuracy points.

The score of an arch is a super-net accuracy (column 'supernet_acc', kind 'supernet')
or a zero-cost proxy's value (column 'proxy_score', kind 'proxy'); metrics.json's
`score` record says which. For a proxy, the fields named mean_supernet_acc (and
tau_a's A_N) hold the mean proxy score.

The evaluation identity (`evaluation_identity`) is everything besides the trained
weights that determines the numbers: the bench table (sha256) and metric, the groups
(top-N sizes, random size and seed, scope), the BN mode with its parameters, the
number of checkpoints averaged and the masked ops. `identity_differences` compares
the one stored with results to the one a rerun asks for.
"""
from __future__ import annotations

import csv
import io
import json
import os

import numpy as np

from spos_jax import bench as bench_lib
from spos_jax import config as config_lib
from spos_jax import metrics
from spos_jax import space
from spos_jax import workdir as workdir_lib

RESULTS_FOLDER = 'results'  # WORKDIR/results/<evaluation name>/ holds one evaluation
PROXY_PREFIX = 'proxy-'  # results/proxy-<name>/ holds a zero-cost proxy's scores
PREDICTIONS_FILE = 'predictions.csv'
METRICS_FILE = 'metrics.json'
SUPERNET_COLUMN = 'supernet_acc'
PROXY_COLUMN = 'proxy_score'
SCORE_KINDS = {SUPERNET_COLUMN: 'supernet', PROXY_COLUMN: 'proxy'}
PREDICTION_COLUMNS = ('seed', 'nb201_index', 'arch', SUPERNET_COLUMN, 'bench_acc')
CLASS_COLUMNS = ('class_id', 'class_size')  # after PREDICTION_COLUMNS with eval.scope=unique
GROUP_METRICS = ('n', 'kendall_tau', 'kendall_tau_b', 'spearman', 'pearson',
                 'mean_supernet_acc', 'mean_bench_acc')
PRECISION_KS = (10, 50, 100)
TOP1_FIELDS = ('bench_rank', 'bench_accuracy', 'regret')


def results_name(eval_config) -> str:
  """The results subfolder: eval.name, else derived from the BN mode and scope, and
  the checkpoints averaged ('running-all-avg3')."""
  if eval_config.name:
    return eval_config.name
  mode = eval_config.bn_mode
  if mode == 'recalibrate':
    mode += f'{eval_config.recalibrate_batches}'
  averaged = eval_config.average_checkpoints
  return f'{mode}-{eval_config.scope}' + (f'-avg{averaged}' if averaged > 1 else '')


def proxy_results_name(proxy: str) -> str:
  """The results subfolder of a zero-cost proxy's scores: 'proxy-<name>'."""
  return PROXY_PREFIX + proxy


def proxy_of_results_name(name: str) -> str | None:
  """The proxy a results subfolder is named after ('synflow' of 'proxy-synflow'); None
  for a super-net evaluation's name."""
  return name[len(PROXY_PREFIX):] if name.startswith(PROXY_PREFIX) else None


def evaluation_folder(workdir: str, name: str) -> str:
  """WORKDIR/results/<name>: where one evaluation's files live."""
  return os.path.join(workdir, RESULTS_FOLDER, name)


def group_summary(pred: np.ndarray, truth: np.ndarray) -> dict:
  """Correlations and mean accuracies of one group of archs (one seed)."""
  out = metrics.correlations(pred, truth)
  out['mean_supernet_acc'] = float(np.mean(pred))
  out['mean_bench_acc'] = float(np.mean(truth))
  return out


def mean_std(values) -> dict:
  """Mean and sample std (ddof=1; None with a single seed) over seeds."""
  values = np.asarray(values, np.float64)
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return {'mean': float(np.mean(values)), 'std': std}


def top1_entry(scores: np.ndarray, truth: np.ndarray, indices, arch_strings,
               subset_truth: np.ndarray | None) -> dict:
  """The arch a score vector ranks first: NB201 index, arch string, bench standing.

  bench_rank counts the archs of the whole subset (subset_truth) with a strictly
  better bench accuracy, so it stays right when only groups were scored; without
  subset_truth it counts the scored archs.
  """
  out = metrics.top1_regret(scores, truth)
  position = out.pop('index')
  if subset_truth is not None:
    out['bench_rank'] = 1 + int(np.count_nonzero(subset_truth > out['bench_accuracy']))
    out['best_accuracy'] = float(max(out['best_accuracy'], np.max(subset_truth)))
    out['regret'] = out['best_accuracy'] - out['bench_accuracy']
  if indices is not None:
    out['nb201_index'] = int(indices[position])
  if arch_strings is not None:
    out['arch'] = str(arch_strings[position])
  out['score'] = float(scores[position])
  return out


def summarize(seeds, scores: np.ndarray, truth: np.ndarray, groups: dict,
              top_ns, *, indices=None, arch_strings=None,
              subset_truth: np.ndarray | None = None) -> dict:
  """metrics.json's numbers. scores [S, m] super-net accuracies (or proxy scores), truth [m].

  groups maps a group name to positions into the m scored archs; indices and
  arch_strings [m] name the scored archs (NB201 index, arch string) for the top-1
  entries; subset_truth is the bench accuracy of every arch of the subset (for the
  top-1 bench rank).
  """
  seed_keys = [str(s) for s in seeds]
  out = {'groups': {}, 'precision_at_k': {}}
  for name, pos in groups.items():
    per_seed = {k: group_summary(scores[i, pos], truth[pos]) for i, k in enumerate(seed_keys)}
    entry = {'per_seed': per_seed}
    for field in GROUP_METRICS:
      entry[field] = mean_std([per_seed[k][field] for k in seed_keys])
    out['groups'][name] = entry
  # tau_a: A_N is the super-net accuracy averaged over the top-N archs and over seeds.
  a_n = [out['groups'][f'top{n}']['mean_supernet_acc']['mean'] for n in top_ns]
  per_seed_tau_a = {k: metrics.tau_a(top_ns, [out['groups'][f'top{n}']['per_seed'][k]
                                              ['mean_supernet_acc'] for n in top_ns])
                    for k in seed_keys}
  out['tau_a'] = {'value': metrics.tau_a(top_ns, a_n), 'group_sizes': list(top_ns),
                  'mean_supernet_acc': a_n, 'per_seed': per_seed_tau_a}
  everything = groups['all']
  for k_top in PRECISION_KS:
    if k_top > len(everything):
      continue
    per_seed = {k: metrics.precision_at_k(scores[i, everything], truth[everything], k_top)
                for i, k in enumerate(seed_keys)}
    out['precision_at_k'][str(k_top)] = dict(per_seed=per_seed, **mean_std(list(per_seed.values())))
  names = [None if a is None else np.asarray(a)[everything] for a in (indices, arch_strings)]
  per_seed_top1 = {k: top1_entry(scores[i, everything], truth[everything], *names, subset_truth)
                   for i, k in enumerate(seed_keys)}
  out['top1'] = {'per_seed': per_seed_top1}
  for field in TOP1_FIELDS:
    out['top1'][field] = mean_std([per_seed_top1[k][field] for k in seed_keys])
  # One arch for all seeds: the first by the score averaged over seeds.
  out['top1']['of_mean_score'] = top1_entry(scores[:, everything].mean(0), truth[everything],
                                            *names, subset_truth)
  return out


def prediction_columns(score_column: str = SUPERNET_COLUMN,
                       classes: bool = False) -> tuple[str, ...]:
  return (PREDICTION_COLUMNS[:3] + (score_column,) + PREDICTION_COLUMNS[4:]
          + (CLASS_COLUMNS if classes else ()))


def _score_text(value: float, score_column: str) -> str:
  # Accuracies are multiples of 100/n_images: 4 decimals are exact. Proxy scores span
  # many orders of magnitude: the shortest exact repr keeps their order and ties.
  return f'{value:.4f}' if score_column == SUPERNET_COLUMN else repr(float(value))


def predictions_csv(seeds, indices, arch_strings, scores, truth,
                    score_column: str = SUPERNET_COLUMN, classes=None) -> str:
  """classes: (class ids, class sizes) of the archs, written as two more columns."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(prediction_columns(score_column, classes is not None))
  for i, seed in enumerate(seeds):
    for j in range(len(indices)):
      row = [seed, int(indices[j]), arch_strings[j], _score_text(scores[i, j], score_column),
             f'{truth[j]:.6f}']
      if classes is not None:
        row += [int(classes[0][j]), int(classes[1][j])]
      writer.writerow(row)
  return buffer.getvalue()


# ---------------------------------------------------------------------------
# What identifies an evaluation


def _resolved_path(value: str) -> str:
  """The bench file a bench.path value names, as an absolute path ('' for none)."""
  path = bench_lib.resolve_path(value) if value else None
  return os.path.realpath(path) if path else ''


def _masked_names(masked) -> list[str]:
  """Masked ops in canonical form (OPS order) from a comma string or a list."""
  return [space.OPS[i] for i in space.parse_op_list(masked or '')]


def evaluation_identity(config, bench_sha256: str, top_ns) -> dict:
  """Everything besides the trained weights that determines the results' numbers.

  top_ns are the top-N sizes actually used (eval.top_ns without the sizes larger
  than the subset). eval.average_checkpoints is always recorded (results written
  before it existed scored one checkpoint). eval.recalibrate_batches counts only
  with bn_mode=recalibrate and eval.batch_size only with bn_mode=batch (BN statistics
  of each evaluated batch); eval.groups_per_call and eval.name change speed and place, not numbers.
  bench.path is recorded (resolved) but a moved table with the same sha256 is the
  same table (see identity_differences).
  """
  identity = {
      'bench.path': _resolved_path(config.bench.path),
      'bench.sha256': bench_sha256,
      'bench.metric': config_lib.bench_metric(config),
      'eval.top_ns': [int(n) for n in top_ns],
      'eval.random_size': int(config.eval.random_size),
      'eval.random_seed': int(config.eval.random_seed),
      'eval.scope': config.eval.scope,
      'eval.bn_mode': config.eval.bn_mode,
      'eval.average_checkpoints': int(config.eval.average_checkpoints),
      'space.masked_ops': _masked_names(config.space.masked_ops),
  }
  if config.eval.bn_mode == 'recalibrate':
    identity['eval.recalibrate_batches'] = int(config.eval.recalibrate_batches)
  if config.eval.bn_mode == 'batch':
    identity['eval.batch_size'] = int(config.eval.batch_size)
  return identity


def _identity_from_old_record(stored: dict) -> dict:
  """The identity of a metrics.json written before it recorded one: config + bench."""
  flat, bench = stored.get('config') or {}, stored.get('bench') or {}
  identity = {
      'bench.path': _resolved_path(bench.get('path') or flat.get('bench.path', '')),
      'bench.sha256': bench.get('sha256'),
      'bench.metric': bench.get('metric', flat.get('bench.metric')),
      'eval.top_ns': [int(n) for n in flat.get('eval.top_ns', ())],
      'eval.random_size': flat.get('eval.random_size'),
      'eval.random_seed': flat.get('eval.random_seed'),
      'eval.scope': flat.get('eval.scope'),
      'eval.bn_mode': flat.get('eval.bn_mode'),
      'eval.average_checkpoints': flat.get('eval.average_checkpoints', 1),
      'space.masked_ops': _masked_names(flat.get('space.masked_ops', '')),
  }
  if identity['eval.bn_mode'] == 'recalibrate':
    identity['eval.recalibrate_batches'] = flat.get('eval.recalibrate_batches')
  if identity['eval.bn_mode'] == 'batch':
    identity['eval.batch_size'] = flat.get('eval.batch_size')
  return identity


def _shown(key: str, value) -> str:
  if value is None:
    return 'not used'
  if key == 'bench.sha256':
    return str(value)[:12]
  if isinstance(value, list):
    return ','.join(str(v) for v in value) or '(none)'
  return str(value)


# What results written before an identity key existed computed.
_IDENTITY_DEFAULTS = {'eval.average_checkpoints': 1}


def compare_identities(stored: dict, wanted: dict) -> list[str]:
  """'key: old (stored) -> new (now)' for every key whose value differs; a key the
  stored identity lacks holds the value results had before it was recorded."""
  stored = {**_IDENTITY_DEFAULTS, **stored}
  out = []
  same_table = stored.get('bench.sha256') == wanted.get('bench.sha256')
  for key in sorted(set(stored) | set(wanted)):
    old, new = stored.get(key), wanted.get(key)
    if old == new or (key == 'bench.path' and same_table):
      continue
    out.append(f'{key}: {_shown(key, old)} (stored) -> {_shown(key, new)} (now)')
  return out


def identity_differences(folder: str, config, bench_sha256: str, top_ns) -> list[str]:
  """How the evaluation stored in folder differs from the one config asks for.

  [] when they are equal or when folder holds no metrics.json; an unreadable
  metrics.json is one item naming it. metrics.json files written before the
  `evaluation` record existed are compared through their `config` and `bench`.
  """
  path = os.path.join(folder, METRICS_FILE)
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      stored = json.load(f)
    old = stored.get('evaluation') or _identity_from_old_record(stored)
  except (OSError, ValueError, AttributeError) as e:
    return [f'{path}: unreadable ({type(e).__name__}: {e})']
  return compare_identities(old, evaluation_identity(config, bench_sha256, top_ns))


# ---------------------------------------------------------------------------
# Writing


def score_record(score_column: str, score_name: str | None) -> dict:
  """metrics.json's `score`: which column holds the scores, and what made them."""
  if score_column not in SCORE_KINDS:
    raise ValueError(f'score_column {score_column!r}: must be one of '
                     f'{", ".join(SCORE_KINDS)}')
  kind = SCORE_KINDS[score_column]
  if kind == 'proxy' and not score_name:
    raise ValueError("a proxy's results need score_name (e.g. 'synflow')")
  return {'column': score_column, 'kind': kind, 'name': score_name or kind}


def write(folder: str, *, config, bench, seeds, indices, arch_strings, scores, truth,
          groups, evaluated_archs_per_second: float, step: int | None = None,
          averaged_steps=None, score_column: str = SUPERNET_COLUMN,
          score_name: str | None = None) -> dict:
  """Write predictions.csv and metrics.json into folder; returns the metrics.

  config.eval.top_ns must hold the top-N sizes actually used; bench is the subset
  (masked ops removed; its isomorphism classes with eval.scope=unique) the archs
  were drawn from, and indices etc. are of its rows; step is the optimizer step of
  the scored checkpoint (None for scores without training, e.g. proxies at init);
  averaged_steps, the checkpoints whose scores were averaged (step first), is
  recorded as scored_steps ([step] when not given).

  Both files are complete on disk (temporary names) before either is renamed into
  place, so a failure leaves an earlier evaluation's pair untouched; an older
  metrics.json is removed just before the renames, so that it never stands beside
  another evaluation's predictions.
  """
  score = score_record(score_column, score_name)
  top_ns = tuple(config.eval.top_ns)
  metric = config_lib.bench_metric(config)
  summary = summarize(seeds, scores, truth, groups, top_ns, indices=indices,
                      arch_strings=arch_strings, subset_truth=np.asarray(bench.metric(metric)))
  bench_record = {'path': bench.path, 'sha256': bench.sha256, 'metric': metric,
                  'archs_in_subset': len(bench)}
  classes = None
  if bench.class_ids is not None:  # archs_in_subset counts classes, these the archs
    bench_record['archs_in_classes'] = int(bench.class_sizes.sum())
    by_index = np.argsort(bench.indices)
    rows = by_index[np.searchsorted(bench.indices[by_index], np.asarray(indices))]
    classes = (bench.class_ids[rows], bench.class_sizes[rows])
  if averaged_steps is None:
    averaged_steps = () if step is None else (step,)
  summary.update(
      seeds=list(seeds),
      score=score,
      scored_step=None if step is None else int(step),
      scored_steps=[int(s) for s in averaged_steps] or None,
      evaluation=evaluation_identity(config, bench.sha256, top_ns),
      bench=bench_record,
      evaluated_archs=int(len(indices)),
      evaluated_archs_per_second=evaluated_archs_per_second,
      # Resolved ('auto' as what it meant), as config.json: a resumed run's config has
      # its recorded source adopted, and must not record another value than a fresh one.
      config=config_lib.flatten(config_lib.resolved(config)))
  os.makedirs(folder, exist_ok=True)
  predictions_tmp = workdir_lib.write_temporary(
      folder, predictions_csv(seeds, indices, arch_strings, scores, truth, score_column,
                              classes))
  try:
    metrics_tmp = workdir_lib.write_temporary(folder, workdir_lib.json_text(summary))
  except BaseException:
    os.remove(predictions_tmp)
    raise
  metrics_path = os.path.join(folder, METRICS_FILE)
  if os.path.exists(metrics_path):
    os.remove(metrics_path)
  try:
    os.replace(predictions_tmp, os.path.join(folder, PREDICTIONS_FILE))
    os.replace(metrics_tmp, metrics_path)
  finally:
    for tmp in (predictions_tmp, metrics_tmp):
      if os.path.exists(tmp):
        os.remove(tmp)
  return summary


def write_tensorboard(writer, name: str, summary: dict, step: int) -> None:
  """Scalars eval/<name>/<group>/<metric> (means over seeds) and the extras."""
  for group, entry in summary['groups'].items():
    for field in GROUP_METRICS[1:]:
      value = entry[field]['mean']
      if value == value:  # skip NaN (constant predictions)
        writer.add_scalar(f'eval/{name}/{group}/{field}', value, step)
  writer.add_scalar(f'eval/{name}/tau_a', summary['tau_a']['value'], step)
  for k, entry in summary['precision_at_k'].items():
    writer.add_scalar(f'eval/{name}/precision_at_{k}', entry['mean'], step)
  writer.add_scalar(f'eval/{name}/top1_regret', summary['top1']['regret']['mean'], step)
  writer.flush()


# ---------------------------------------------------------------------------
# The summary printed at the end of a run


SUMMARY_FIELDS = (('kendall_tau', 'Kendall tau', '{:+.3f}'), ('spearman', 'Spearman', '{:+.3f}'))


def _number(value, pattern: str) -> str:
  """None (NaN in JSON) as 'nan'; else the pattern."""
  return 'nan' if value is None or value != value else pattern.format(value)


def _mean_std_text(stats: dict, pattern: str) -> str:
  """'m +- s' over several seeds; the single value alone with one seed (std None)."""
  text = _number(stats.get('mean'), pattern)
  if stats.get('std') is None:
    return text
  return f'{text} +- {_number(stats["std"], pattern.replace("+", ""))}'


def _group_key(name: str):
  if name.startswith('top') and name[3:].isdigit():
    return (0, int(name[3:]))
  return (1, {'random': 0, 'all': 1}.get(name, 2), name)


def _score_words(summary: dict) -> tuple[str, str, str]:
  """(what scored the archs, column title of the mean score, number pattern)."""
  score = summary.get('score') or {'kind': 'supernet', 'name': 'supernet'}
  if score.get('kind') == 'proxy':
    return f'proxy {score.get("name")}', 'mean proxy score', '{:.4g}'
  return 'super-net', 'super-net acc (%)', '{:.2f}'


def _top1_lines(summary: dict, scorer: str) -> list[str]:
  top1 = summary.get('top1') or {}
  best = top1.get('of_mean_score')
  subset = (summary.get('bench') or {}).get('archs_in_subset')
  of = f' of {subset}' if subset else ''
  per_seed = top1.get('per_seed') or {}
  ranks = ', '.join(str(int(v['bench_rank'])) for v in per_seed.values())
  if best is None:  # written before the top-1 arch was recorded
    return [f"{scorer} top-1 bench rank per seed: {ranks}{of}; regret "
            f"{_mean_std_text(top1.get('regret', {}), '{:.2f}')} points"]
  seeds_word = ' (by the mean over seeds)' if len(per_seed) > 1 else ''
  lines = [f"{scorer} top-1{seeds_word}: NB201 index {best.get('nb201_index', '?')}, "
           f"bench rank {int(best['bench_rank'])}{of}"]
  if best.get('arch'):
    lines.append(f"  {best['arch']}")
  tail = (f"  bench accuracy {best['bench_accuracy']:.2f} %, regret {best['regret']:.2f} "
          'points')
  if len(per_seed) > 1:
    tail += f"; each seed's top-1 bench rank: {ranks}"
  return lines + [tail]


def format_summary(summary: dict, folder: str) -> str:
  """The short plain-text table printed at the end of a run (fits 100 columns).

  A pure function of metrics.json's dict and the results folder it lives in
  (WORKDIR/results/<name>): per group n, Kendall tau, Spearman and the mean score
  (mean +- std over seeds with several seeds); tau_a; the top-1 arch with its bench
  rank and regret; where the files are.
  """
  scorer, score_title, pattern = _score_words(summary)
  seeds = summary.get('seeds') or []
  bench = summary.get('bench') or {}
  step = summary.get('scored_step')
  steps = summary.get('scored_steps') or []
  if len(steps) > 1:
    checkpoints = f', mean of checkpoint steps {", ".join(map(str, steps))}'
  else:
    checkpoints = f', checkpoint step {step}' if step is not None else ''
  classes = (f', {bench["archs_in_subset"]} isomorphism classes of '
             f'{bench["archs_in_classes"]} archs' if 'archs_in_classes' in bench else '')
  head = (f'{scorer} ranking against {bench.get("metric", "the bench")}, '
          f'{len(seeds)} seed{"s" * (len(seeds) != 1)} ({", ".join(map(str, seeds))})'
          + checkpoints + classes)
  rows = [('group', 'n') + tuple(title for _, title, _ in SUMMARY_FIELDS) + (score_title,)]
  for name in sorted(summary['groups'], key=_group_key):
    entry = summary['groups'][name]
    rows.append((name, str(int(entry['n']['mean'])))
                + tuple(_mean_std_text(entry[f], p) for f, _, p in SUMMARY_FIELDS)
                + (_mean_std_text(entry['mean_supernet_acc'], pattern),))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  table = ['  '.join(cell.ljust(w) if i == 0 else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
           for row in rows]
  a_n = 'mean proxy score' if scorer.startswith('proxy') else 'mean super-net accuracy'
  tau_a = summary.get('tau_a', {}).get('value')
  lines = [head, *table,
           f'tau_a {_number(tau_a, "{:+.3f}")} (Kendall tau of N against A_N, the {a_n} '
           'of the top-N; -1 is best)']
  lines += _top1_lines(summary, scorer)
  parent = os.path.dirname(os.path.normpath(folder))
  lines += ['files:', f'  {os.path.join(folder, PREDICTIONS_FILE)}',
            f'  {os.path.join(folder, METRICS_FILE)}']
  if os.path.basename(parent) == RESULTS_FOLDER:
    tb = os.path.join(os.path.dirname(parent), 'tb')
    lines.append(f'  {tb}{os.sep}  (tensorboard --logdir {tb})')
  return '\n'.join(lines)
