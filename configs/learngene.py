r"""Learngene: a teacher, a TLEG or SWS learngene distilled from it, and descendants of any
depth initialized from the learngene; a byte-level LM on tiny_shakespeare or a ViT on digits.

    python -m initlab.main --config=configs/learngene.py:role=teacher --workdir=runs/lg/teacher
    python -m initlab.main --config=configs/learngene.py:role=gene,gene=tleg \
        --config.train.distill.teacher=runs/lg/teacher --workdir=runs/lg/tleg
    python -m initlab.main --config=configs/learngene.py:role=descendant,gene=tleg,depth=6 \
        --config.init.pretrained=runs/lg/tleg --workdir=runs/lg/tleg_d6

Arguments:
  task: 'lm' (transformer LM on tiny_shakespeare, 64-byte windows) or 'vit' (ViT on the 8x8
    digits, 2x2 patches and a class token).
  role: 'teacher' (twice as wide, 8 layers, trained on the labels), 'gene' (the auxiliary
    model: `model.learngene = gene`, 8 layers, trained by pure distillation from
    `train.distill.teacher`, α = 1 as the authors' `--distillation-alpha 1.0`),
    'descendant' (an ordinary model of `depth` layers initialized by `tleg_expand` /
    `sws_expand` from `init.pretrained`, then trained) or 'scratch' (the same descendant
    under its default init, lecun_normal: the baseline).
  gene: 'tleg' (TLEG, arXiv 2312.05614: θ_l = θ_A + c_l·θ_B) or 'sws' (SWS, arXiv
    2404.16897: stages sharing params; stages (2, 2, 2, 2) here, so descendants need >= 4
    layers).
  depth: the descendant's number of layers.
  steps: training steps (0: 400 for teacher and gene, 100 for descendants).
  smoke: seconds on a CPU (width 32, a few steps).

The sizes are a CPU study's (experiments/learngene/): width 64 (teacher 128), 2 heads
(teacher 4), AdamW 1e-3 with a 20-step warmup and cosine decay to 0.1x.
"""

import pathlib

from initlab import config as config_lib

GENE_DEPTH = 8  # Layers of the learngene's forward pass (TLEG's L; SWS: sum of its stages).
SWS_STAGES = (2, 2, 2, 2)
TASKS = ('lm', 'vit')
ROLES = ('teacher', 'gene', 'descendant', 'scratch')
GENES = ('tleg', 'sws')
LM_BASE = pathlib.Path(__file__).resolve().parent / 'lm_shakespeare.py'


def _choice(name, value, valid):
  if value not in valid:
    raise config_lib.ConfigError(f'<arg {name}>: {value!r}; valid: {", ".join(valid)}')


def _vit(smoke: bool):
  config = config_lib.default_config()
  config.model = config_lib.model_config(
    'vit', input_shape=(8, 8, 1), patch_size=2, num_classes=10, mlp_ratio=4.0, pool='cls'
  )
  config.data.name = 'digits'
  config.train.batch_size = 32
  config.optimizer.update(
    dict(name='adamw', learning_rate=1e-3, schedule='warmup_cosine', end_lr_ratio=0.1)
  )
  config.optimizer.weight_decay = 0.05
  config.optimizer.grad_clip_norm = 1.0
  if smoke:
    config.train.update(dict(steps=10, eval_every=5, log_every=5, checkpoint_every=5))
    config.train.progress_bar = False
  return config


def get_config(arg=None):
  arg = config_lib.parse_arg(
    arg, task='lm', role='descendant', gene='tleg', depth=6, steps=0, smoke=False
  )
  _choice('task', arg.task, TASKS)
  _choice('role', arg.role, ROLES)
  _choice('gene', arg.gene, GENES)
  if arg.task == 'lm':  # configs/lm_shakespeare.py (its smoke schedule with `smoke`).
    config = config_lib.load(LM_BASE, 'smoke' if arg.smoke else None)
    config.data.seq_len = config.model.max_len = 32 if arg.smoke else 64
    config.train.batch_size = 8 if arg.smoke else 16
  else:
    config = _vit(arg.smoke)
  config.name = f'Learngene {arg.task.upper()} ({arg.role}, {arg.gene})'
  dim, heads = (32, 2) if arg.smoke else (64, 2)
  teacher = arg.role == 'teacher'
  config.model.update(
    dict(
      dim=2 * dim if teacher else dim,
      depth={'teacher': 8, 'gene': GENE_DEPTH}.get(arg.role, arg.depth),
      num_heads=2 * heads if teacher else heads,
    )
  )
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
  config.report.target_metric = 'eval/loss'
  if not arg.smoke:
    steps = arg.steps or (400 if arg.role in ('teacher', 'gene') else 100)
    config.optimizer.warmup_steps = 20
    config.train.update(
      dict(
        steps=steps,
        eval_every=25,
        eval_steps=10 if arg.task == 'lm' else 0,
        log_every=25,
        checkpoint_every=steps,
      )
    )
  elif arg.steps:
    config.train.update(dict(steps=arg.steps, checkpoint_every=arg.steps))
  return config
