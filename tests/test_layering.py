"""Package layering: `initlab.init` never imports the model zoo, `initlab.train` never the report.

Read from the source (every import statement, also those inside functions), so a lazy
import counts as well as a top-level one.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'initlab'


def _imports(path: pathlib.Path, package: pathlib.Path = PACKAGE) -> list[tuple[int, str]]:
  """(line, dotted module) of every import in `path` (a file of `package`); `from a import
  b` gives both a and a.b, a relative import is resolved against the file's package."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = path.relative_to(package.parent).with_suffix('').parts[: -node.level]
        base = '.'.join(parts + ((node.module,) if node.module else ()))
      found.append((node.lineno, base))
      found += [(node.lineno, f'{base}.{alias.name}') for alias in node.names]
  return found


def _violations(package: pathlib.Path, subpackage: str, forbidden: str) -> list[str]:
  files = sorted((package / subpackage).rglob('*.py'))
  assert files, f'no source files under {package / subpackage}'
  return [
    f'{path.relative_to(package.parent)}:{line} imports {name}'
    for path in files
    for line, name in _imports(path, package)
    if name == forbidden or name.startswith(forbidden + '.')
  ]


@pytest.mark.parametrize(
  'subpackage, forbidden', [('init', 'initlab.models'), ('train', 'initlab.report')]
)
def test_subpackage_does_not_import(subpackage, forbidden):
  assert _violations(PACKAGE, subpackage, forbidden) == []


@pytest.mark.parametrize(
  'statement',
  [
    'import initlab.models',
    'import initlab.models.mlp as mlp',
    'from initlab import models',
    'from initlab.models import build',
    'from ... import models',
    'from ...models import build',
  ],
)
def test_every_import_form_is_found(tmp_path, statement):
  """Top-level or inside a function, absolute or relative: each form counts."""
  fake = tmp_path / 'initlab' / 'init' / 'families' / 'x.py'
  fake.parent.mkdir(parents=True)
  fake.write_text(f'import os\n\n\ndef f():\n  {statement}\n')
  assert _violations(tmp_path / 'initlab', 'init', 'initlab.models') == [
    f'initlab/init/families/x.py:5 imports {name}'
    for _, name in _imports(fake, tmp_path / 'initlab')
    if name.startswith('initlab.models')
  ]
  assert _violations(tmp_path / 'initlab', 'init', 'initlab.models')
  assert not _violations(tmp_path / 'initlab', 'init', 'initlab.model')
