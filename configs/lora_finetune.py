r"""LoRA-init transfer: pretrain a model on one task, fine-tune its adapters on another.

    python -m initlab.main --config=configs/lora_finetune.py:task=vit,role=pretrain \
        --workdir=runs/lora/vit_base
    python -m initlab.main --config=configs/lora_finetune.py:task=vit,scheme=pissa,rank=16 \
        --config.init.pretrained=runs/lora/vit_base --workdir=runs/lora/vit_pissa

Arguments:
  task: 'lm' (byte-level transformer LM; pretrain on the first half of tiny_shakespeare's
    train split, fine-tune on the second half; eval on 'validation') or 'vit' (ViT on the 8x8
    digits; pretrain on digits 0-4, fine-tune on 5-9 with the classifier trained too, PEFT's
    modules_to_save; eval on the test split's digits of that task).
  role: 'pretrain' (every param trained from lecun_normal) or 'finetune' (adapters on every
    attention and MLP kernel, base frozen; `init.name = scheme`, base from
    `init.pretrained`) or 'full' (full fine-tuning from `init_from`, the baseline).
  scheme: the LoRA init (`initlab.init.families.lora`): pissa, milora, olora, loftq, loldu,
    lora_default, lora_gaussian, lora_orthogonal, lora_ga, lora_ga_peft, lora_sb, corda, eva.
  rank: the adapters' rank (alpha = rank: s = 1, as PiSSA's and MiLoRA's code).
  smoke: seconds on a CPU (width 32, a few steps).

Sizes are a CPU study's (experiments/lora_init/): width 64, 4 layers, 4 heads,
AdamW with warmup and cosine decay; fine-tuning uses one learning rate for every adapter
init (1e-3, 3e-4 for full fine-tuning), so the inits are compared as they start, not as
their own learning rates were tuned.
"""

import pathlib

from initlab import config as config_lib

TASKS = ('lm', 'vit')
ROLES = ('pretrain', 'finetune', 'full')
LM_BASE = pathlib.Path(__file__).resolve().parent / 'lm_shakespeare.py'
TARGETS = {
  'lm': r'blocks/(attn/(query|key|value|out)|mlp/(fc1|fc2))/kernel',
  'vit': r'blocks/\d+/(attn/(query|key|value|out)|mlp/(fc1|fc2))/kernel',
}
DATA_STAGE = ('lora_ga', 'lora_ga_peft', 'lora_sb', 'corda', 'eva')  # num_batches options.


def _choice(name, value, valid):
  if value not in valid:
    raise config_lib.ConfigError(f'<arg {name}>: {value!r}; valid: {", ".join(valid)}')


def _lm(role: str, smoke: bool):
  config = config_lib.load(LM_BASE, 'smoke' if smoke else None)
  dim = 32 if smoke else 64
  config.model.update(dict(dim=dim, depth=2 if smoke else 4, num_heads=2 if smoke else 4))
  config.data.seq_len = config.model.max_len = 32 if smoke else 64
  config.data.train_split = 'train[:50%]' if role == 'pretrain' else 'train[50%:]'
  config.train.batch_size = 8 if smoke else 16
  return config


def _vit(role: str, smoke: bool):
  config = config_lib.default_config()
  dim = 32 if smoke else 64
  config.model = config_lib.model_config(
    'vit', input_shape=(8, 8, 1), patch_size=2, num_classes=5, mlp_ratio=4.0, pool='cls',
    dim=dim, depth=2 if smoke else 4, num_heads=2 if smoke else 4,
  )  # fmt: skip
  config.data.name = 'digits'
  config.data.classes = (0, 1, 2, 3, 4) if role == 'pretrain' else (5, 6, 7, 8, 9)
  config.train.batch_size = 32
  config.report.target_metric = 'eval/accuracy'
  return config


def get_config(arg=None):
  arg = config_lib.parse_arg(
    arg, task='vit', role='finetune', scheme='pissa', rank=16, steps=0, smoke=False
  )
  _choice('task', arg.task, TASKS)
  _choice('role', arg.role, ROLES)
  config = _lm(arg.role, arg.smoke) if arg.task == 'lm' else _vit(arg.role, arg.smoke)
  config.name = f'LoRA init {arg.task.upper()} ({arg.role})'
  config.optimizer.update(
    dict(name='adamw', learning_rate=1e-3, schedule='warmup_cosine', end_lr_ratio=0.1)
  )
  config.optimizer.weight_decay = 0.0 if arg.role == 'finetune' else 0.05
  config.optimizer.grad_clip_norm = 1.0
  config.init.name = 'lecun_normal'
  if arg.role == 'finetune':
    config.init.name = arg.scheme
    config.lora.update(targets=TARGETS[arg.task], rank=arg.rank)
    if arg.task == 'vit':
      config.lora.train_also = r'head/.*'  # A new task's classifier.
    if arg.scheme in DATA_STAGE:
      config.init[arg.scheme] = dict(num_batches=2 if arg.smoke else 8)
  if arg.role == 'full':
    config.optimizer.learning_rate = 3e-4
  if arg.task == 'lm':
    config.report.target_metric = 'eval/loss'
  if arg.smoke:
    config.train.update(dict(steps=arg.steps or 6, eval_every=3, log_every=3, checkpoint_every=6))
    config.train.eval_steps = 2
    config.optimizer.warmup_steps = 1
    config.train.progress_bar = False
  else:
    steps = arg.steps or (600 if arg.role == 'pretrain' else 200)
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
  return config
