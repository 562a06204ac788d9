"""python -m spos_jax.report: see spos_jax/report/cli.py."""
import sys

from spos_jax.report import cli

if __name__ == '__main__':
  sys.exit(cli.main())
