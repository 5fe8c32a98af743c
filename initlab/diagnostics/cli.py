r"""Signal-propagation diagnostics at init, comparing init schemes on one zoo model.

    python -m initlab.diagnostics --model=resnet20 --init=he_normal,orthogonal,zero \
        --batch_size=64 --seed=0 --out=runs/diag
    python -m initlab.diagnostics --model=mlp --depth=30 --width=512 \
        --init=he_normal,lecun_normal --model_opt=use_bias=False --out=runs/diag_mlp

Writes diagnostics.md, summary.csv, stages.csv, diagnostics.json and four PNGs
(`initlab.diagnostics.plot_depth_profiles`) into --out (a relative path is resolved against
the current directory at the start) and prints the markdown table.

Mode: by default (--train) the statistics are measured in train mode: BatchNorm normalizes
with the batch's own statistics, as in the first training step, which is the network that
training differentiates. --notrain measures eval mode (running averages, ≈ identity at init;
e.g. He on ResNet-20 gives q last/first ≈ 181 there vs ≈ 9.1 in train mode). diagnostics.md
states the mode. Models without BatchNorm give the same numbers in both modes.

Data: one batch of random inputs, no dataset needed, shaped by the model registry's input
spec (`initlab.models.input_spec`): i.i.d. N(0, 1) floats of shape (B, *spec.shape), or tokens
uniform in [0, vocab_size) of shape (B, --seq_len) for token models. Graph models (gcn, sage,
gin) take the graph dataset --graph instead (cora, citeseer, csbm, chung_lu; the model's
num_features/num_classes follow it), loss over its train nodes, no Jacobian
(`initlab.diagnostics.gnn.compare`); diagnostics.md then also has the per-layer forward and
backward variance ratios:

    python -m initlab.diagnostics --model=gcn --depth=6 --graph=cora \
        --init=glorot_normal,he_normal,virgo --out=runs/diag_gcn
--depth sets the config's `depth`; --width its `width` (mlp: units; resnet: channel
multiplier) or, for vit/transformer_lm, its `dim`. --model_opt=key=value (repeatable) sets
any other option; values are Python literals, else strings.
"""

from __future__ import annotations

import ast
import os
import sys
import time

from absl import app
from absl import flags
import jax

from initlab import diagnostics
from initlab import init as init_lib
from initlab import models
from initlab.models import gnn as gnn_models

_MODEL = flags.DEFINE_string('model', 'mlp', 'Zoo model or preset: mlp, resnet20, vit, ...')
_INIT = flags.DEFINE_string(
  'init',
  'he_normal,lecun_normal,orthogonal',
  'Comma-separated init scheme names (initlab.init.scheme_names()).',
)
_DEPTH = flags.DEFINE_integer('depth', None, "Sets the model config's depth.")
_WIDTH = flags.DEFINE_float('width', None, 'Sets `width` (or `dim` for vit/transformer_lm).')
_MODEL_OPT = flags.DEFINE_multi_string('model_opt', [], 'key=value model config override.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Number of random inputs.')
_SEQ_LEN = flags.DEFINE_integer('seq_len', 32, 'Token sequence length (transformer_lm).')
_GRAPH = flags.DEFINE_string('graph', 'cora', 'Graph dataset of graph models (gcn, sage, gin).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds the model build, the init, the data and probes.')
_TRAIN = flags.DEFINE_bool(
  'train',
  True,
  'Measure forward/backward in train mode (BatchNorm with batch statistics, as '
  'at the first training step); --notrain: eval mode (running averages).',
)
_JAC_EXAMPLES = flags.DEFINE_integer('jacobian_examples', 4, 'Examples with a Jacobian.')
_JAC_DIM = flags.DEFINE_integer('max_jacobian_dim', 256, 'Exact Jacobian up to this size.')
_OUT = flags.DEFINE_string('out', None, 'Output directory.')


def parse_schemes(spec: str) -> dict:
  """'a,b' -> {'a': get_scheme('a'), 'b': ...}; ValueError naming the valid names."""
  names = [n.strip() for n in spec.split(',') if n.strip()]
  valid = init_lib.scheme_names()
  unknown = [n for n in names if n not in valid]
  if not names or unknown:
    raise ValueError(
      f'--init={spec!r}: unknown scheme(s) {unknown or "(none given)"}; '
      f'valid names: {", ".join(valid)}'
    )
  return {n: init_lib.get_scheme(n) for n in names}


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def model_config(name: str, depth=None, width=None, opts=()):
  """The zoo config of `name` with --depth, --width and key=value `opts` applied."""
  config = models.default_config(name)
  overrides = {}
  if depth is not None:
    overrides['depth'] = depth
  if width is not None:
    key = 'width' if 'width' in config else 'dim'
    overrides[key] = int(width) if isinstance(config[key], int) else float(width)
  for opt in opts:
    key, sep, value = opt.partition('=')
    if not sep:
      raise ValueError(f'--model_opt={opt!r} must be key=value')
    overrides[key.strip()] = _literal(value.strip())
  for key, value in overrides.items():
    if key not in config or key == 'name':
      valid = sorted(k for k in config if k != 'name')
      raise ValueError(f'model {name!r} has no option {key!r}; valid options: {valid}')
    config[key] = tuple(value) if isinstance(value, list) else value
  return config


def random_batch(config, batch_size: int, seq_len: int, key: jax.Array) -> jax.Array:
  """The default data (module docstring) for a zoo model config, from its input spec."""
  spec = models.input_spec(config)
  shape = (batch_size, *(seq_len if d is None else d for d in spec.shape))
  if spec.vocab_size is not None:
    return jax.random.randint(key, shape, 0, spec.vocab_size)
  return jax.random.normal(key, shape)


def run(
  name: str,
  schemes: dict,
  *,
  out: str,
  depth=None,
  width=None,
  opts=(),
  batch_size=64,
  seq_len=32,
  seed=0,
  graph='cora',
  train=True,
  jacobian_examples=4,
  max_jacobian_dim=256,
  plot=True,
  log=print,
) -> tuple[dict, str]:
  """Builds the model, compares `schemes`, writes tables (and plots if `plot`) into `out`.

  Returns ({scheme: Diagnostics}, markdown table).
  """
  out = os.path.abspath(out)
  config = model_config(name, depth, width, opts)
  if config.name in gnn_models.NAMES:
    return _run_graph(config, schemes, out=out, graph=graph, seed=seed, plot=plot, log=log)
  data_key, key = jax.random.split(jax.random.key(seed))
  batch = random_batch(config, batch_size, seq_len, data_key)
  log(
    f'model {name}: {dict(config)}; batch {batch.shape} {batch.dtype}; '
    f'{"train" if train else "eval"} mode'
  )
  start = time.time()
  results = diagnostics.compare(
    lambda rngs: models.build(config, rngs=rngs),
    schemes,
    batch,
    key,
    model_config=config,
    log=lambda s: log(f'{s} (t={time.time() - start:.1f}s)'),
    train=train,
    num_jacobian_examples=jacobian_examples,
    max_jacobian_dim=max_jacobian_dim,
  )
  table = diagnostics.write_table(results, out)
  paths = diagnostics.plot_depth_profiles(results, out) if plot else []
  log(f'done in {time.time() - start:.1f}s; wrote tables and {len(paths)} plots to {out}')
  return results, table


def _run_graph(config, schemes, *, out, graph, seed, plot, log) -> tuple[dict, str]:
  """`run` for a graph model on graph dataset `graph` (module docstring)."""
  from initlab.diagnostics import gnn  # pylint: disable=g-import-not-at-top

  log(f'model {config.name}: {dict(config)}; graph {graph}')
  start = time.time()
  results, ratios = gnn.compare(
    config,
    schemes,
    {'name': graph},
    jax.random.key(seed),
    log=lambda s: log(f'{s} (t={time.time() - start:.1f}s)'),
  )
  table = diagnostics.write_table(results, out) + '\n' + gnn.ratios_markdown(ratios)
  with open(os.path.join(out, 'diagnostics.md'), 'w') as f:
    f.write(table)
  paths = diagnostics.plot_depth_profiles(results, out) if plot else []
  log(f'done in {time.time() - start:.1f}s; wrote tables and {len(paths)} plots to {out}')
  return results, table


def main(argv, prog: str = 'initlab.diagnostics'):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    schemes = parse_schemes(_INIT.value)
    config = model_config(_MODEL.value, _DEPTH.value, _WIDTH.value, _MODEL_OPT.value)
    if config.name in gnn_models.NAMES:
      from initlab.data import graphs  # pylint: disable=g-import-not-at-top

      if _GRAPH.value not in graphs.names():
        raise ValueError(f'--graph={_GRAPH.value!r}: valid graph datasets: {list(graphs.names())}')
  except ValueError as e:
    sys.exit(f'{prog}: {e}\nPass --helpshort to see the flags.')  # exit status 1
  progress = lambda s: print(s, file=sys.stderr, flush=True)
  _, table = run(
    _MODEL.value,
    schemes,
    out=_OUT.value,
    depth=_DEPTH.value,
    width=_WIDTH.value,
    opts=_MODEL_OPT.value,
    batch_size=_BATCH.value,
    seq_len=_SEQ_LEN.value,
    seed=_SEED.value,
    graph=_GRAPH.value,
    train=_TRAIN.value,
    jacobian_examples=_JAC_EXAMPLES.value,
    max_jacobian_dim=_JAC_DIM.value,
    log=progress,
  )
  print(table)


def entry(prog: str = 'initlab.diagnostics') -> None:
  """`python -m initlab.diagnostics` (see `__main__.py`)."""
  flags.mark_flag_as_required('out')
  app.run(lambda argv: main(argv, prog))
