r"""Learngene on tiny_shakespeare: a teacher LM, a TLEG or SWS learngene distilled from it, and
descendant LMs of any depth initialized from the learngene.

    python -m initlab.main --config=configs/learngene_lm.py:role=teacher --workdir=runs/lg/teacher
    python -m initlab.main --config=configs/learngene_lm.py:role=gene,gene=tleg \
        --config.train.distill.teacher=runs/lg/teacher --workdir=runs/lg/tleg
    python -m initlab.main --config=configs/learngene_lm.py:role=descendant,gene=tleg,depth=6 \
        --config.init.pretrained=runs/lg/tleg --workdir=runs/lg/tleg_d6

Arguments:
  role: 'teacher' (a wider, deeper LM trained on the labels), 'gene' (the auxiliary model:
    `model.learngene = gene`, trained by pure distillation from `train.distill.teacher`, α = 1
    as the authors' `--distillation-alpha 1.0`), 'descendant' (an ordinary LM of `depth`
    layers initialized by `tleg_expand` / `sws_expand` from `init.pretrained`, then trained),
    'scratch' (the same descendant under its default init, the baseline).
  gene: 'tleg' (TLEG, arXiv 2312.05614: θ_l = θ_A + c_l·θ_B) or 'sws' (SWS, arXiv
    2404.16897: stages sharing params; stages (2, 2, 2, 2) here, 8 layers).
  depth: the descendant's number of layers.
  smoke: seconds on a CPU (dim 32, seq 32, a few steps).
"""

import pathlib

from initlab import config as config_lib

GENE_DEPTH = 8  # Layers of the learngene's forward pass (TLEG's L; SWS: sum of its stages).
SWS_STAGES = (2, 2, 2, 2)
ROLES = ('teacher', 'gene', 'descendant', 'scratch')
GENES = ('tleg', 'sws')
BASE = pathlib.Path(__file__).resolve().parent / 'lm_shakespeare.py'


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, role='descendant', gene='tleg', depth=6, smoke=False)
  if arg.role not in ROLES:
    raise config_lib.ConfigError(f'<arg role>: {arg.role!r}; valid: {", ".join(ROLES)}')
  if arg.gene not in GENES:
    raise config_lib.ConfigError(f'<arg gene>: {arg.gene!r}; valid: {", ".join(GENES)}')
  # configs/lm_shakespeare.py (its smoke schedule with `smoke`), at learngene sizes.
  config = config_lib.load(BASE, 'smoke' if arg.smoke else None)
  config.name = f'Learngene LM ({arg.role}, {arg.gene})'
  dim, heads, seq = (32, 2, 32) if arg.smoke else (128, 4, 128)
  config.model.update(
    dict(
      dim=2 * dim if arg.role == 'teacher' else dim,
      depth={'teacher': 8, 'gene': GENE_DEPTH}.get(arg.role, arg.depth),
      num_heads=heads,
      max_len=seq,
    )
  )
  config.data.seq_len = seq
  config.init.name = 'lecun_normal'
  if arg.role == 'gene':
    config.init.name = 'model_init'  # The learngene's own init (TLEG: θ_B of LayerNorm at 0).
    config.model.learngene = arg.gene
    if arg.gene == 'sws':
      config.model.learngene_stages = SWS_STAGES
    config.train.loss = 'distill'
    config.train.distill.alpha = 1.0
  if arg.role == 'descendant':
    config.init.name = f'{arg.gene}_expand'
    if arg.gene == 'sws':
      config.init.sws_expand = dict(stages=SWS_STAGES)
  if not arg.smoke:
    config.optimizer.warmup_steps = 100
    config.train.update(
      dict(
        steps=2000 if arg.role in ('teacher', 'gene') else 500,
        batch_size=32,
        eval_every=250,
        checkpoint_every=250,
      )
    )
  return config
