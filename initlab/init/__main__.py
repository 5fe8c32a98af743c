"""`python -m initlab.init --list`: every init name (scheme or initializer) with one line."""

import argparse

import initlab.init as ii


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m initlab.init', description=__doc__)
  parser.add_argument('--list', action='store_true', help='list every init name with one line')
  args = parser.parse_args(argv)
  if not args.list:
    parser.print_help()
    return 2
  print(ii.scheme_table())
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
