"""REPRODUCTION.md's generated parts: the queue, the claims' verdicts, Fig. 4 and the
whole-space numbers against outside anchors.

  python -m spos_jax.reproduction --root=results/paper --page=REPRODUCTION.md \\
      [--figures=results/paper/figures] [--cpu_root=results/cpu] \\
      [--cpu_rerun_root=results/cpu_rerun]

The page judges the claims at two scales, each from its own folder of runs and never
comparing runs across them: the paper's networks (--root, sections `runs`, `claims`,
`figure4`, `full_space`) and the CPU scale (--cpu_root, configs/cpu_small.py and
cpu_medium.py; the same sections prefixed `cpu_`, plus `cpu_trajectory`), with the
verdicts of both side by side in `verdicts`. With --cpu_rerun_root (runs of the CPU
scale trained again from their own config.json, e.g. on another machine), also
`cpu_rerun` (each seed's numbers, first and again) and `cpu_unique` (rankings of the
unique archs, eval.scope=unique, beside the other protocols on the same weights).

ROOT holds one folder per run of the queue (claims.QUEUE), named as the sweep
launcher names them (launch/grid.py), each with config.json, run_info.json and
results/<eval>/ (metrics.json, predictions.csv; results.py). The page's generated
parts sit between marker comments (`<!-- generated:NAME -->` ...
`<!-- end generated:NAME -->`) and are rewritten in place; everything outside them is
hand-written and left untouched.

Each claim carries the rule that decides its verdict ('holds', 'does not hold',
'not yet run'); claims.py holds the rules. Every setting printed (epochs, seeds, data,
bench column, device, commit) is read from the runs' files, never typed in. Figures
are PNGs with stable bytes (figures.save), so that they can be committed.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
import numpy as np

from spos_jax.report import claims
from spos_jax.report import figures
from spos_jax.report import runs as runs_lib
from spos_jax.report import stats

FIGURES_DIR = os.path.join('results', 'paper', 'figures')
CPU_ROOT = os.path.join('results', 'cpu')
CPU_RERUN_ROOT = os.path.join('results', 'cpu_rerun')
FIGURE_DPI = 110


@dataclasses.dataclass(frozen=True)
class Scale:
  """One scale of the page: its runs' folder, its figures and its markers' prefix."""
  title: str  # 'paper scale', 'CPU scale'
  label: str  # the root as the page names it ('results/paper')
  root: str
  figures: str
  prefix: str  # of its sections' marker names: '' or 'cpu_'
  rerun_root: str = ''  # runs of root trained again from their config.json; '' for none


def paper_scale(root: str, figures_dir: str) -> Scale:
  return Scale('paper scale', 'results/paper', root, figures_dir, '')


def cpu_scale(root: str, figures_dir: str | None = None, rerun_root: str = '') -> Scale:
  return Scale('CPU scale', 'results/cpu', root,
               figures_dir or os.path.join(root, 'figures'), 'cpu_', rerun_root)


# ---------------------------------------------------------------------------
# Figures


def _save_png(figure: Figure, folder: str, stem: str) -> str:
  """folder/stem.png; its path."""
  return figures.save(figure, folder, stem, formats=('png',), dpi=FIGURE_DPI)[0]


def settings_title(runs: Sequence[runs_lib.Run]) -> str:
  epochs = sorted({str(r.config.get('train.epochs')) for r in runs})
  metric = sorted({str(r.metrics.get('bench', {}).get('metric')) for r in runs})
  data = sorted({claims.data_source_text(r.config).replace('`', '') for r in runs})
  return (f'{"/".join(epochs)} epochs, {" / ".join(data)}; ground truth '
          f'{"/".join(metric)}; mean ± std over seeds')


def fig4_figure(runs: Sequence[runs_lib.Run]) -> Figure:
  """Fig. 4 of the paper: A_N and Kendall tau against N, one row per size present."""
  rows = [[r for r in runs if r.size == size] for size in runs_lib.SIZES]
  rows = [row for row in rows if row]
  figure = figures.new_figure(12.0, 3.8 * len(rows))
  axes = figure.subplots(len(rows), 2, squeeze=False)
  color_of = dict(zip((r.name for r in runs), figures.run_colors(len(runs))))
  for (ax_acc, ax_kt), row in zip(axes, rows):
    for run in row:
      label = f'{run.name} (τa {stats.tau_a(run):+.2f})'
      for ax, field in ((ax_acc, 'mean_supernet_acc'), (ax_kt, 'kendall_tau')):
        figures.plot_against_n(ax, run, field, color_of[run.name], label)
    size = runs_lib.SIZES[row[0].size]
    ax_acc.set_ylabel(f'{size}: A_N (%)')
    ax_kt.set_ylabel(f'{size}: Kendall tau')
    for ax in (ax_acc, ax_kt):
      figures.log_n_axis(ax, sorted({n for run in row for n in stats.top_sizes(run)}))
      ax.set_xlabel('N (top-N bench archs); dotted: random group')
    ax_kt.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.02, 1.0))
  figure.suptitle(f'Fig. 4-style: {settings_title(runs)}', fontsize=10)
  return figure


def full_space_figure(full: dict[str, claims.FullSpace],
                      runs: dict[str, runs_lib.Run]) -> Figure:
  """Kendall tau and Spearman over each run's whole subset, beside the anchors."""
  names = list(full)
  figure = figures.new_figure(max(8.0, 1.2 * len(names) + 5.0), 5.2)
  axes = figure.subplots(1, 2, squeeze=False)[0]
  x = np.arange(len(names))
  labels = [f'{n} ({len(full[n].seeds)} seed{"s" * (len(full[n].seeds) > 1)}'
            + (f', {full[n].archs} sampled)' if full[n].sampled else ')') for n in names]
  for ax, field, label in ((axes[0], 'kendall_tau', 'Kendall tau'),
                           (axes[1], 'spearman', 'Spearman')):
    mean = np.asarray([getattr(full[n], field)[0] for n in names])
    std = np.asarray([getattr(full[n], field)[1] or 0.0 for n in names])
    ax.errorbar(x, mean, yerr=std, fmt='o', color='C0', capsize=3)
    for anchor, style in zip(claims.ANCHORS, ('--', ':')):
      ax.axhline(getattr(anchor, field), color='C3', ls=style, lw=1.2)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xticks(x, labels, fontsize=7, rotation=30, ha='right')
    ax.set_ylabel(f'{label}, whole (masked) subset or sample')
    ax.grid(alpha=0.3)
  handles = [Line2D([], [], color='C0', marker='o', ls='',
                    label='run (mean ± std over its seeds)')]
  handles += [Line2D([], [], color='C3', ls=style,
                     label=f'{a.label}: Kendall tau {a.kendall_tau:.3f}, '
                           f'Spearman {a.spearman:.3f}')
              for a, style in zip(claims.ANCHORS, ('--', ':'))]
  figure.legend(handles=handles, loc='outside lower center', fontsize=8)
  shown = [runs[n] for n in names if n in runs]
  suffix = f'\n{settings_title(shown)}' if shown else ''
  figure.suptitle(f'Whole-space ranking against the anchors{suffix}', fontsize=10)
  return figure


# ---------------------------------------------------------------------------
# The page's generated parts


def _link(path: str, page_dir: str, alt: str) -> str:
  return f'![{alt}]({os.path.relpath(path, page_dir).replace(os.sep, "/")})'


def _root_label(root: str) -> str:
  """A root's last two path parts ('results/cpu_rerun'), wherever it is checked out."""
  path = os.path.abspath(root)
  return f'{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}'


def runs_section(evidence: claims.Evidence) -> list[str]:
  """The queue: each run's state and settings, from its files."""
  lines = [f'{len(evidence.runs)} of {len(claims.QUEUE)} runs of the queue have results.',
           '',
           '| # | run | state | epochs | seeds | data | bench column | device | commit | '
           'wall time |',
           '|---|---|---|---|---|---|---|---|---|---|']
  walls = []
  for i, name in enumerate(claims.QUEUE, start=1):
    run = evidence.runs.get(name)
    if run is None:
      reason = evidence.absent.get(name, 'no run folder')
      state = 'not yet run' if reason == 'no run folder' else reason.replace('|', '/')
      lines.append(f'| {i} | `{name}` | {state} |' + f' {claims.MISSING} |' * 7)
      continue
    wall = runs_lib.read_log_wall_seconds(run.folder)
    walls.append(wall)
    info = evidence.run_info.get(name, {})
    jax_version = (info.get('packages') or {}).get('jax')
    device = info.get('device_kind', claims.MISSING)
    if info.get('platform') == 'cpu' and info.get('host_cpu'):
      device = f'cpu: {info["host_cpu"]}'  # XLA:CPU's code, so its floats, depend on it
    device += f', jax {jax_version}' if jax_version else ''
    commit = f'`{info["git_commit"]}`' if info.get('git_commit') else claims.MISSING
    lines.append(f'| {i} | `{name}` | results (`{run.eval_name}`) | '
                 f'{run.config.get("train.epochs")} | {claims.seeds_text(run.seeds)} | '
                 f'{claims.data_text(run.config)} | {claims.bench_text(run)} | {device} | '
                 f'{commit} | {_duration_text(wall)} |')
  if walls:
    logged = [w for w in walls if w is not None]
    lines += ['', f'Wall time: training and scoring, from each run\'s `log.txt` (every '
              f'launch from its header to its last line, resumes included): '
              f'{_duration_text(sum(logged)) if logged else claims.MISSING} for the '
              f'{len(logged)} of {len(walls)} runs with results that carry a log.']
  return lines


def _duration_text(seconds: float | None) -> str:
  if seconds is None:
    return claims.MISSING
  hours, minutes = divmod(round(seconds / 60), 60)
  return f'{hours} h {minutes:02d} min' if hours else f'{minutes} min'


def claims_section(evidence: claims.Evidence, found: Sequence[claims.Finding],
                   label: str = 'results/paper') -> list[str]:
  counts = {v: sum(f.verdict == v for f in found) for v in claims.VERDICTS}
  lines = [', '.join(f'{counts[v]} {v}' for v in claims.VERDICTS) + '.', '']
  runs = list(evidence.runs.values())
  if runs:
    lines += (['Settings of the runs these verdicts read:', ''] + claims.settings_lines(runs)
              + [''])
  else:
    lines += [f'No run of the queue has results under `{label}/` yet, so no claim '
              'can be checked: every verdict is "not yet run" and no number is shown.', '']
  lines += ['| id | paper | rule (holds when) | ours (mean ± std over seeds) | verdict |',
            '|---|---|---|---|---|']
  for f in found:
    verdict = f'**{f.verdict}**' + (f' ({f.note})' if f.note else '')
    lines.append(f'| {f.claim.id} | {f.claim.paper} | {f.claim.rule} | {f.ours} | {verdict} |')
  return lines


def figure4_section(evidence: claims.Evidence, page_dir: str, figures_dir: str) -> list[str]:
  runs = [evidence.runs[n] for n in claims.QUEUE if n in evidence.runs]
  if not runs:
    return ['Nothing drawn yet: no run of the queue has results.']
  path = _save_png(fig4_figure(runs), figures_dir, 'fig4_accuracy_tau')
  return [_link(path, page_dir, 'A_N and Kendall tau against N, runs of the queue'), '',
          'Runs drawn: ' + ', '.join(f'`{r.name}`' for r in runs) + '.',
          ''] + claims.settings_lines(runs)


def full_space_section(evidence: claims.Evidence, page_dir: str, figures_dir: str) -> list[str]:
  anchors = '; '.join(f'{a.label}: Kendall tau {a.kendall_tau:.3f}, Spearman {a.spearman:.3f}'
                      for a in claims.ANCHORS)
  lines = [f'Anchors over all 15625 archs: {anchors}.', '']
  full = {n: evidence.full_space[n] for n in claims.QUEUE if n in evidence.full_space}
  if not full:
    return lines + ['No run has a whole-space evaluation (`eval.scope=all`) or a random '
                    'sample of the space yet: nothing to tabulate or draw.']
  lines += ['| run | evaluation | seeds | archs ranked | Kendall tau | Spearman | epochs | '
            'data | bench column |', '|---|---|---|---|---|---|---|---|---|']
  for name, entry in full.items():
    run = evidence.runs.get(name)
    settings = ([str(run.config.get('train.epochs')), claims.data_text(run.config),
                 claims.bench_text(run)] if run else [claims.MISSING] * 3)
    lines.append(f'| `{name}` | `{entry.eval_name}` | {claims.seeds_text(entry.seeds)} | '
                 f'{entry.archs_text} | '
                 f'{claims.fmt(*entry.kendall_tau, digits=3, signed=False)} | '
                 f'{claims.fmt(*entry.spearman, digits=3, signed=False)} | '
                 + ' | '.join(settings) + ' |')
  path = _save_png(full_space_figure(full, evidence.runs), figures_dir,
                   'full_space_anchors')
  return lines + ['', 'A masked run ranks its subset only (e.g. 4096 archs with one op '
                  'masked), the anchors the whole space. A run without a whole-subset '
                  'evaluation shows its largest uniform random sample of the subset '
                  '(an evaluation beside the groups one, e.g. `eval.random_size=1000`); '
                  'its network, training budget and set of archs all differ from the '
                  'anchors\'.', '',
                  _link(path, page_dir, 'whole-space Kendall tau and Spearman against the '
                        'anchors')]


def _same_weights_text(evidence: claims.Evidence, name: str) -> list[str]:
  """The run's groups `all` Kendall tau and its whole-space / sample one: the other
  protocols on the same weights."""
  run = evidence.runs.get(name)
  groups = claims.MISSING
  if run is not None and 'all' in run.metrics.get('groups', {}):
    n = int(run.metrics['groups']['all']['n']['mean'])
    groups = f'{claims.fmt(*stats.group_stat(run, "all", "kendall_tau"), digits=3)} over {n}'
  full = evidence.full_space.get(name)
  space = (f'{claims.fmt(*full.kendall_tau, digits=3)} over {full.archs_text}' if full
           else claims.MISSING)
  return [groups, space]


def unique_section(evidences: dict[str, claims.Evidence]) -> list[str]:
  """Runs ranked over the isomorphism classes (eval.scope=unique), beside the other
  protocols on the same weights; `evidences` maps each root's label to its runs."""
  rows = [(label, name, entry) for label, evidence in evidences.items()
          for name, entry in evidence.unique.items()]
  if not rows:
    return ['No run has a unique-architecture evaluation (`eval.scope=unique`) yet.']
  lines = ['| run | folder | evaluation | seeds | archs ranked | Kendall tau | Spearman | '
           'Kendall tau, groups `all` | Kendall tau, whole space or its sample |',
           '|---|---|---|---|---|---|---|---|---|']
  for label, name, entry in rows:
    lines.append(f'| `{name}` | `{label}` | `{entry.eval_name}` | '
                 f'{claims.seeds_text(entry.seeds)} | {entry.archs_text} | '
                 f'{claims.fmt(*entry.kendall_tau, digits=3)} | '
                 f'{claims.fmt(*entry.spearman, digits=3)} | '
                 + ' | '.join(_same_weights_text(evidences[label], name)) + ' |')
  return lines


# run_info.json fields that say what produced a run, compared between a run and its rerun.
PROVENANCE = (('packages', 'package versions'), ('data_sha256', 'data contents (sha256)'),
              ('bench_sha256', 'bench table (sha256)'), ('git_commit', 'commit'),
              ('host_cpu', 'host CPU'))


def _provenance_text(first: dict, again: dict) -> str:
  """What two run_info.json records share and where they differ (package versions
  named, not listed)."""
  same, differ = [], []
  for key, label in PROVENANCE:
    if first.get(key) == again.get(key):
      if key in first:
        same.append(label)
    elif key == 'packages':
      differ.append(label)
    else:
      differ.append(f'{label}: {first.get(key, "not recorded")} → '
                    f'{again.get(key, "not recorded")}')
  return (f'the same: {", ".join(same) or "nothing recorded"}; '
          f'different: {"; ".join(differ) or "nothing recorded"}.')


def rerun_section(first: claims.Evidence, again: claims.Evidence) -> list[str]:
  """Runs trained twice from the same config.json: each seed's numbers side by side,
  and what differed in their records."""
  names = [n for n in claims.QUEUE if n in first.runs and n in again.runs]
  if not names:
    return ['No run of the queue has been trained again.']
  lines = ['| run | seed | Kendall tau, groups `all` | Kendall tau, random group | '
           'super-net acc (%), groups `all` | τa |', '|---|---|---|---|---|---|']
  notes = []
  for name in names:
    runs = (first.runs[name], again.runs[name])
    configs = [r.config for r in runs]
    shared = configs[0].keys() & configs[1].keys()
    changed = sorted(k for k in shared if configs[0][k] != configs[1][k])
    if changed:
      notes.append(f'`{name}`: the two config.json differ in {", ".join(changed)}; its rows '
                   f'compare different runs.')
    one_only = sorted(configs[0].keys() ^ configs[1].keys())
    if one_only:
      notes.append(f'`{name}`: keys only one config.json records (options added to the '
                   f'package in between): {", ".join(one_only)}.')
    for seed in runs[0].seeds:
      if seed not in runs[1].seeds:
        continue
      cells = []
      for group, field, digits in (('all', 'kendall_tau', 3), ('random', 'kendall_tau', 3),
                                   ('all', 'mean_supernet_acc', 2)):
        values = [r.metrics['groups'][group]['per_seed'][seed][field] for r in runs]
        cells.append(' → '.join(claims.fmt(v, digits=digits, signed=field == 'kendall_tau')
                                for v in values))
      cells.append(' → '.join(claims.fmt(r.metrics['tau_a']['per_seed'][seed], digits=3)
                              for r in runs))
      lines.append(f'| `{name}` | {seed} | ' + ' | '.join(cells) + ' |')
    notes.append(f'`{name}`, ' + _provenance_text(first.run_info.get(name, {}),
                                                   again.run_info.get(name, {})))
  return (lines + ['', 'Each cell: first run → the run again.', '']
          + [f'- {n}' for n in notes] + ['', verdicts_with_reruns(first, again, names)])


def verdicts_with_reruns(first: claims.Evidence, again: claims.Evidence,
                         names: Sequence[str]) -> str:
  """Which verdicts change when the runs trained again stand in for the first ones."""
  swapped = dataclasses.replace(
      first, runs={**first.runs, **{n: again.runs[n] for n in names}},
      full_space={**{n: v for n, v in first.full_space.items() if n not in names},
                  **{n: again.full_space[n] for n in names if n in again.full_space}})
  before = {f.claim.id: f for f in claims.findings(first)}
  after = {f.claim.id: f for f in claims.findings(swapped)}
  changed = [f'{i} {after[i].verdict} ({after[i].ours}; with the first runs '
             f'{before[i].verdict})' for i in before if after[i].verdict != before[i].verdict]
  runs = ', '.join(f'`{n}`' for n in names)
  if not changed:
    return f'With the runs trained again ({runs}) in place of the first ones, every verdict stays.'
  return (f'With the runs trained again ({runs}) in place of the first ones: '
          + '; '.join(changed) + '. The other verdicts stay.')


def _last_change(series: stats.Series) -> float:
  """The change of the seed-mean over the last evaluation interval (NaN with one)."""
  finite = series.mean[np.isfinite(series.mean)]
  return float(finite[-1] - finite[-2]) if len(finite) >= 2 else math.nan


def trajectory_section(evidence: claims.Evidence, page_dir: str,
                       figures_dir: str) -> list[str]:
  """Kendall tau of each run's trajectory (trajectory.csv) per evaluation epoch, its
  change over the last interval, and the figure."""
  pairs = []
  for name in claims.QUEUE:
    run = evidence.runs.get(name)
    trajectory = runs_lib.read_trajectory(run.folder) if run else None
    if trajectory is not None:
      pairs.append((run, trajectory))
  if not pairs:
    return ['No run of the queue recorded a ranking trajectory.']
  lines = ['| run | group | Kendall tau at epoch (mean over seeds) | change over the last '
           'interval | τa at epoch |', '|---|---|---|---|---|']
  for run, trajectory in pairs:
    tau = stats.trajectory_series(trajectory, 'kendall_tau')
    tau_a = stats.trajectory_series(trajectory, 'tau_a')
    if tau is None:
      continue
    points = ', '.join(f'{e:.3g}: {claims.fmt(m, None, digits=3)}'
                       for e, m in zip(tau.epochs, tau.mean))
    tau_a_points = ', '.join(f'{e:.3g}: {claims.fmt(m, None, digits=2)}'
                             for e, m in zip(tau_a.epochs, tau_a.mean)
                             ) if tau_a and np.isfinite(tau_a.mean).any() else ''
    lines.append(f'| `{run.name}` | {tau.group} ({int(np.nanmax(trajectory.values["n"]))} '
                 f'archs) | {points} | {claims.fmt(_last_change(tau), None, digits=3)} | '
                 f'{tau_a_points or claims.MISSING} |')
  path = _save_png(figures.trajectory_figure(pairs, 'Queue'), figures_dir, 'trajectory')
  return lines + ['', _link(path, page_dir, 'Kendall tau, Spearman and τa during training')]


def verdicts_section(found_by_scale: dict[str, Sequence[claims.Finding]]) -> list[str]:
  """One row per claim: its verdict at each scale."""
  titles = list(found_by_scale)
  lines = ['| id | paper | ' + ' | '.join(titles) + ' |',
           '|---|---|' + '---|' * len(titles)]
  for i, claim in enumerate(claims.CLAIMS):
    verdicts = [found_by_scale[t][i].verdict for t in titles]
    lines.append(f'| {claim.id} | {claim.paper} | ' + ' | '.join(f'**{v}**' for v in verdicts)
                 + ' |')
  return lines


SECTIONS = ('runs', 'claims', 'figure4', 'full_space')


def generated_sections(evidence: claims.Evidence, page_dir: str, figures_dir: str,
                       scale: Scale | None = None) -> dict:
  """The sections of one scale, keyed by their marker names."""
  scale = scale or paper_scale('', figures_dir)
  found = claims.findings(evidence)
  sections = {
      'runs': runs_section(evidence),
      'claims': claims_section(evidence, found, scale.label),
      'figure4': figure4_section(evidence, page_dir, figures_dir),
      'full_space': full_space_section(evidence, page_dir, figures_dir),
  }
  if scale.prefix:  # the trajectory is recorded by the CPU-scale configs
    sections['trajectory'] = trajectory_section(evidence, page_dir, figures_dir)
  return {scale.prefix + name: lines for name, lines in sections.items()}


def _marker_pattern(name: str) -> re.Pattern:
  return re.compile(rf'(<!-- generated:{name} -->\n)(.*?)(<!-- end generated:{name} -->)',
                    re.DOTALL)


def fill(page: str, sections: dict[str, list[str]]) -> str:
  """The page with each marked part replaced; ReproductionError on a missing marker."""
  for name, lines in sections.items():
    pattern = _marker_pattern(name)
    count = len(pattern.findall(page))
    if count != 1:
      raise claims.ReproductionError(
          f'the page has {count} `<!-- generated:{name} -->` ... `<!-- end generated:{name} '
          f'-->` pairs; it needs exactly one of each of: {", ".join(SECTIONS)}')
    body = '\n'.join(lines) + '\n'
    page = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(3), page)
  return page


def write_page(root: str, page_path: str, figures_dir: str,
               cpu: Scale | None = None) -> list[claims.Finding]:
  """Regenerate the page's marked parts (and its figures) from the runs under root
  and, with `cpu`, those of the CPU scale and the side-by-side verdicts; returns the
  findings of root."""
  try:
    with open(page_path, encoding='utf-8') as f:
      page = f.read()
  except OSError as e:
    raise claims.ReproductionError(
        f'--page={page_path}: cannot read ({e.strerror})') from None
  page_dir = os.path.dirname(os.path.abspath(page_path))
  evidence = claims.gather(root)
  sections = generated_sections(evidence, page_dir, os.path.abspath(figures_dir))
  found = claims.findings(evidence)
  if cpu is not None:
    cpu_evidence = claims.gather(cpu.root)
    sections.update(generated_sections(cpu_evidence, page_dir, os.path.abspath(cpu.figures),
                                       cpu))
    if cpu.rerun_root:
      rerun_evidence = claims.gather(cpu.rerun_root)
      sections['cpu_unique'] = unique_section({_root_label(cpu.root): cpu_evidence,
                                               _root_label(cpu.rerun_root): rerun_evidence})
      sections['cpu_rerun'] = rerun_section(cpu_evidence, rerun_evidence)
    sections['verdicts'] = verdicts_section({
        'paper scale': found, 'CPU scale': claims.findings(cpu_evidence)})
  updated = fill(page, sections)
  if updated != page:
    with open(page_path, 'w', encoding='utf-8') as f:
      f.write(updated)
  return found


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m spos_jax.reproduction', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--root', default=os.path.join('results', 'paper'),
                      help='folder of the run folders (default: results/paper)')
  parser.add_argument('--page', default='REPRODUCTION.md', help='page to regenerate')
  parser.add_argument('--figures', default=FIGURES_DIR,
                      help=f'folder of the page\'s figures (default: {FIGURES_DIR})')
  parser.add_argument('--cpu_root', default=CPU_ROOT,
                      help=f'folder of the CPU-scale run folders (default: {CPU_ROOT}); '
                           f'\'\' leaves the CPU-scale sections as they are')
  parser.add_argument('--cpu_figures', default='',
                      help='folder of the CPU-scale figures (default: CPU_ROOT/figures)')
  parser.add_argument('--cpu_rerun_root', default=CPU_RERUN_ROOT,
                      help=f'folder of CPU-scale runs trained again from their config.json '
                           f'(default: {CPU_RERUN_ROOT}), and their unique-architecture '
                           f'rescorings; \'\' leaves those sections as they are')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    cpu = (cpu_scale(args.cpu_root, args.cpu_figures or None, args.cpu_rerun_root)
           if args.cpu_root else None)
    found = write_page(args.root, args.page, args.figures, cpu)
  except claims.ReproductionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  counts = {v: sum(f.verdict == v for f in found) for v in claims.VERDICTS}
  print(f'{args.page}: ' + ', '.join(f'{counts[v]} {v}' for v in claims.VERDICTS))
  return 0
