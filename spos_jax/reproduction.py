"""python -m spos_jax.reproduction: regenerate REPRODUCTION.md's generated parts.

  python -m spos_jax.reproduction --root=results/paper --page=REPRODUCTION.md \\
      [--figures=results/paper/figures]

The page is written by spos_jax/report/reproduction_page.py, the claims and their
rules are in spos_jax/report/claims.py.
"""
import sys

from spos_jax.report import reproduction_page

main = reproduction_page.main

if __name__ == '__main__':
  sys.exit(main())
