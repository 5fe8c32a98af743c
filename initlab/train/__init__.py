"""initlab.train: train state, step, loop, checkpoints, metrics, runtime (multi-host start-up).

from initlab import train
result = train.run(config, workdir)           # one run (auto-resumes from workdir):
result.state, result.summary                  #   final TrainState, summary.json's dict
results = train.run_study(config, workdir)    # init.compare schemes x seeds.num, + report
"""

# pylint: disable=g-importing-member
from initlab.train.loop import NonFiniteError, Run, RunResult, run
from initlab.train.state import Setup, TrainState
from initlab.train.study import run_configs, run_study


def is_study(config) -> bool:
  """Whether `config` describes a study (several schemes or seeds) rather than one run."""
  return bool(config.init.get('compare')) or config.seeds.num > 1
