r"""Byte-level transformer LM on tiny_shakespeare (offline), one run.

    python -m initlab.main --config=configs/lm_shakespeare.py --workdir=runs/lm_shakespeare

On a TPU pod slice or a multi-GPU host, the same command trains sharded: pick the layout
with an argument, e.g. `--config=configs/lm_shakespeare.py:sharding=fsdp` (multi-host: set
INITLAB_DISTRIBUTED=1 on every host). Arguments:
  smoke: seconds on a CPU (a 1-layer, 32-wide model, 10 steps).
  sharding=<preset>: 'data_parallel' (default), 'fsdp' or 'tensor_parallel'.
  model=<n>: size of the 'model' (tensor-parallel) mesh axis, default 1.
  bf16: bfloat16 compute (params stay float32).
  scheme=<name>: the init scheme (default 'lecun_normal'; e.g. 'orthogonal').
"""

from initlab import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(
    arg, smoke=False, sharding='data_parallel', model=1, bf16=False, scheme='lecun_normal'
  )
  config = config_lib.default_config()
  config.name = 'Transformer LM on tiny_shakespeare'
  config.model = config_lib.model_config(
    'transformer_lm',
    vocab_size=256,
    dim=256,
    depth=4,
    num_heads=4,
    mlp_ratio=4.0,
    max_len=256,
    activation='gelu',
  )
  config.init.name = arg.scheme
  config.data.name = 'tiny_shakespeare'
  config.data.seq_len = 256
  config.data.eval_split = 'validation'
  config.optimizer.name = 'adamw'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 200
  config.optimizer.end_lr_ratio = 0.1
  config.optimizer.weight_decay = 0.1
  config.optimizer.grad_clip_norm = 1.0
  config.optimizer.kwargs.b2 = 0.95
  config.train.steps = 5000
  config.train.batch_size = 64
  config.train.eval_every = 500
  config.train.eval_steps = 20
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.mesh = (('data', -1), ('model', arg.model))
  config.sharding = arg.sharding
  if arg.bf16:
    config.dtype.compute_dtype = 'bfloat16'
  config.report.target_metric = 'eval/loss'
  if arg.smoke:
    config.model.update(dict(dim=32, depth=1, num_heads=2, max_len=32))
    config.data.seq_len = 32
    config.train.steps = 10
    config.train.batch_size = 8
    config.train.eval_every = 5
    config.train.eval_steps = 2
    config.train.log_every = 5
    config.train.checkpoint_every = 5
    config.optimizer.warmup_steps = 2
    config.train.progress_bar = False
  return config
