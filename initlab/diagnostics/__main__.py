"""`python -m initlab.diagnostics`: the command line of `initlab.diagnostics.cli`."""

from initlab.diagnostics import cli

if __name__ == '__main__':
  cli.entry()
