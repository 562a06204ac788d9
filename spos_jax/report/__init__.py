"""Reports of trained runs: the sweep report (python -m spos_jax.report) and the
reproduction page (python -m spos_jax.reproduction).

  runs.py               reads and checks run folders (the one reader of both pages)
  stats.py              numbers over seeds, groups of archs, trajectory series
  figures.py            the figures, and the one way figures are saved
  page.py               report.md with its CSVs and figures
  best.py               a run's best archs
  cli.py                the report's command line
  claims.py             the paper's claims against the reproduction queue's runs
  reproduction_page.py  REPRODUCTION.md's generated parts and their figures
"""
