"""A sweep's report: every run's results over seeds, the paper's figures, report.md.

  python -m spos_jax.report --root=RUNS [--out=REPORT] [--eval_name=running-groups]
      [--bench=TABLE.csv] [--figure=NAME]
  python -m spos_jax.report --run=RUN [--out=REPORT]     # one run: summary + report
  python -m spos_jax.report --run=RUN --best=10          # its 10 best archs, printed

ROOT/<run>/ is one run's workdir: config.json and results/<eval name>/ with
predictions.csv and metrics.json (results.py). Run names are '<size>-<variant>', size
s (small), m (medium) or w (wide), e.g. 's-all', 'm-mask_none+avg_pool_3x3'; other
names take their size from the config. A run names its sweeps (paper figures) in a
SWEEP file or sweep.json; the report has a section per sweep, a run shared by several
sweeps appears in each, and --figure=NAME keeps one sweep ('Fig. 4', 'Fig 4' and
'fig4' are the same name; an unknown one lists the names there are). A --root that is
itself a run folder is reported as --run.

results/proxy-<name>/ holds a zero-cost proxy's scores (column proxy_score): proxies
get rows of their own in the CSVs, a table, and a figure of Kendall tau and Spearman
against N beside the super-net runs of the same subset.

Each run is checked before use (seeds of metrics.json against config.json, every seed
x arch in predictions.csv); a run that fails is refused with the file and the reason,
never mixed in. Runs without results are listed as missing.

Without --bench, the bench table is the one the runs recorded (config.json's
bench.path, 'builtin' included), when a file of it is here.

OUT/summary.csv      one row per run and group (top10..top500, random, all): mean and
                     std over seeds of each results.GROUP_METRICS field
OUT/summary_run.csv  one row per run: tau_a, precision@10/50/100, top-1 rank/regret
OUT/op_usage.csv     Fig. 3's numbers (with a bench table)
OUT/figures/         fig4_accuracy_tau_<sweep> (columns: single op / Zero+X / Pool+X
                     masked; rows: A_N and Kendall tau per size), fig11_scc_pcc_*,
                     fig2_scatter_*, fig3_op_usage, proxies_kt_scc_*, trajectory_*
                     (Kendall tau, Spearman and tau_a against epoch, for runs with a
                     trajectory.csv); .png and .pdf
OUT/report.md        the tables and figures of the study, missing and refused runs

Every mean and std is recomputed from the per-seed values of metrics.json with
results.mean_std's convention (sample std, ddof=1; empty with a single seed). tau_a is
the paper's: Kendall tau of N against A_N, A_N averaged over seeds first.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from spos_jax import results
from spos_jax.report import best
from spos_jax.report import page
from spos_jax.report import runs as runs_lib


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f'{text!r} is not a positive integer')
  return value


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m spos_jax.report', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument('--root', help='sweep folder (one run folder each), or one run folder')
  where.add_argument('--run', help='one run folder (its workdir)')
  parser.add_argument('--out', default=None,
                      help='report folder to write; default ROOT/report (RUN/report)')
  parser.add_argument('--eval_name', default=None,
                      help="results/<name> to report; default: a run's only one, else "
                           f'{runs_lib.DEFAULT_EVAL_NAME!r}')
  parser.add_argument('--bench', default=None,
                      help='bench table (csv/csv.gz): Fig. 3 and the random groups; '
                           'default: the table the runs recorded')
  parser.add_argument('--figure', default=None,
                      help="report only runs whose SWEEP/sweep.json names this sweep "
                           "('Fig. 4', 'Fig 4' or 'fig4')")
  parser.add_argument('--best', type=_positive_int, default=None, metavar='K',
                      help="print a single run's K best archs (bench rank, accuracy, "
                           'score) and write nothing')
  return parser


def print_best(folder: str, eval_name: str | None, k: int) -> None:
  found = runs_lib.collect_run(folder, eval_name)
  if not found.runs and not found.proxies:
    problems = found.refused + found.missing
    raise runs_lib.ReportError(f'{folder}: no usable results'
                               + (f' ({problems[0].reason})' if problems else ''))
  for run in found.runs + found.proxies:
    print(best.format_best(run, k))


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  folder = args.run or args.root
  try:
    single = bool(args.run) or runs_lib.is_single_run(folder)
    if args.best is not None:
      if not single:
        raise runs_lib.ReportError(f'--best needs one run folder (--run=DIR); {folder} is '
                                   'a sweep root')
      print_best(folder, args.eval_name, args.best)
      return 0
    out = args.out or os.path.join(folder, 'report')
    found = page.write_report(folder, out, args.eval_name, args.bench, args.figure, single)
  except runs_lib.ReportError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for problem in found.refused:
    print(f'warning: refused run {problem.name}: {problem.reason}', file=sys.stderr)
  if single:
    for run in found.runs + found.proxies:
      print(results.format_summary(run.metrics, run.results_folder) + '\n')
  print(f'{len(found.runs)} runs reported, {len(found.missing)} missing, '
        f'{len(found.refused)} refused: {os.path.join(out, "report.md")}')
  return 0
