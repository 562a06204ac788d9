"""A run's ranking results: predictions.csv and metrics.json (SPEC 6-7).

predictions.csv  seed, nb201_index, arch, supernet_acc, bench_acc: every scored arch
metrics.json     per group (top10..top500, random, all): correlations and mean
                 accuracies per seed and as mean/std over seeds; tau_a; precision@K;
                 the super-net's top-1 arch; the config and the bench used.
Both files are written atomically; metrics.json last, so its presence means the
evaluation completed.
"""
from __future__ import annotations

import csv
import io
import os

import numpy as np

from spos_jax import config as config_lib
from spos_jax import metrics
from spos_jax import workdir as workdir_lib

PREDICTIONS_FILE = 'predictions.csv'
METRICS_FILE = 'metrics.json'
PREDICTION_COLUMNS = ('seed', 'nb201_index', 'arch', 'supernet_acc', 'bench_acc')
GROUP_METRICS = ('n', 'kendall_tau', 'kendall_tau_b', 'spearman', 'pearson',
                 'mean_supernet_acc', 'mean_bench_acc')
PRECISION_KS = (10, 50, 100)


def results_name(eval_config) -> str:
  """The results subfolder: eval.name, else derived from the BN mode and scope."""
  if eval_config.name:
    return eval_config.name
  mode = eval_config.bn_mode
  if mode == 'recalibrate':
    mode += f'{eval_config.recalibrate_batches}'
  return f'{mode}-{eval_config.scope}'


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


def summarize(seeds, scores: np.ndarray, truth: np.ndarray, groups: dict,
              top_ns) -> dict:
  """metrics.json's numbers. scores [S, m] super-net accuracies, truth [m].

  groups maps a group name to positions into the m scored archs.
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
  per_seed_top1 = {k: metrics.top1_regret(scores[i, everything], truth[everything])
                   for i, k in enumerate(seed_keys)}
  out['top1'] = {'per_seed': per_seed_top1}
  for field in ('bench_rank', 'bench_accuracy', 'regret'):
    out['top1'][field] = mean_std([per_seed_top1[k][field] for k in seed_keys])
  return out


def predictions_csv(seeds, indices, arch_strings, scores, truth) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(PREDICTION_COLUMNS)
  for i, seed in enumerate(seeds):
    for j in range(len(indices)):
      writer.writerow([seed, int(indices[j]), arch_strings[j], f'{scores[i, j]:.4f}',
                       f'{truth[j]:.6f}'])
  return buffer.getvalue()


def write(folder: str, *, config, bench, seeds, indices, arch_strings, scores, truth,
          groups, evaluated_archs_per_second: float) -> dict:
  """Write predictions.csv and metrics.json into folder; returns the metrics.

  Both files are complete on disk (temporary names) before either is renamed into
  place, so a failure leaves an earlier evaluation's pair untouched; an older
  metrics.json is removed just before the renames, so that it never stands beside
  another evaluation's predictions.
  """
  summary = summarize(seeds, scores, truth, groups, tuple(config.eval.top_ns))
  summary.update(
      seeds=list(seeds),
      bench={'path': bench.path, 'sha256': bench.sha256, 'metric': config.bench.metric,
             'archs_in_subset': len(bench)},
      evaluated_archs=int(len(indices)),
      evaluated_archs_per_second=evaluated_archs_per_second,
      config=config_lib.flatten(config))
  os.makedirs(folder, exist_ok=True)
  predictions_tmp = workdir_lib.write_temporary(
      folder, predictions_csv(seeds, indices, arch_strings, scores, truth))
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
