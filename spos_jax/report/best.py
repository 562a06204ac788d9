"""A run's best archs by its score: NB201 index, bench rank and accuracy, the score."""
from __future__ import annotations

import numpy as np

from spos_jax.report import runs as runs_lib
from spos_jax.report import stats


def best_archs(run: runs_lib.Run, k: int) -> list[dict]:
  """The k archs with the best score (mean over seeds; ties by NB201 index).

  bench_rank is 1 + the scored archs with a better bench accuracy. When the run
  scored only groups, a rank above the largest top-N is not exact (unscored archs
  may be better): exact is False there.
  """
  pred = run.predictions
  mean = pred.scores.mean(axis=0)
  std = pred.scores.std(axis=0, ddof=1) if len(run.seeds) > 1 else None
  scored = len(pred.indices)
  whole = scored >= int(run.metrics.get('bench', {}).get('archs_in_subset') or 0)
  exact_up_to = scored if whole else max(stats.top_sizes(run), default=0)
  out = []
  for position in np.lexsort((pred.indices, -mean))[:k]:
    rank = 1 + int(np.count_nonzero(pred.truth > pred.truth[position]))
    out.append({'nb201_index': int(pred.indices[position]),
                'arch': pred.arch_strings[position] if pred.arch_strings else '',
                'bench_rank': rank, 'exact': rank <= exact_up_to,
                'bench_accuracy': float(pred.truth[position]),
                'score_mean': float(mean[position]),
                'score_std': None if std is None else float(std[position])})
  return out


def format_best(run: runs_lib.Run, k: int) -> str:
  """The k best archs of a run as a plain-text table."""
  rows = best_archs(run, k)
  proxy = run.is_proxy
  what = f'proxy {run.score.get("name")} score' if proxy else 'super-net accuracy (%)'
  seeds = f'mean over {len(run.seeds)} seeds' if len(run.seeds) > 1 else 'one seed'
  metric = run.metrics.get('bench', {}).get('metric', 'bench')
  subset = run.metrics.get('bench', {}).get('archs_in_subset')
  pattern = '{:.4g}' if proxy else '{:.2f}'
  table = [('#', 'NB201', 'bench rank', f'{metric} (%)', what, 'arch')]
  for i, row in enumerate(rows, start=1):
    score = pattern.format(row['score_mean'])
    if row['score_std'] is not None:
      score += ' +- ' + pattern.format(row['score_std'])
    rank = str(row['bench_rank']) if row['exact'] else f'>{max(stats.top_sizes(run))}'
    table.append((str(i), str(row['nb201_index']), rank, f"{row['bench_accuracy']:.2f}",
                  score, row['arch']))
  widths = [max(len(r[c]) for r in table) for c in range(len(table[0]) - 1)]
  lines = [f'{run.label} ({run.eval_name}): best {len(rows)} archs by {what}, {seeds}; '
           f'bench rank among {subset or "the"} archs of the subset']
  for row in table:
    lines.append('  '.join(c.rjust(w) for c, w in zip(row, widths)) + '  ' + row[-1])
  return '\n'.join(lines)
