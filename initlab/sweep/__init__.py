"""initlab.sweep: sweeps over any dotted config keys x seeds, resumable, on several runners.

    python -m initlab.sweep --config=configs/quickstart.py --workdir=runs/qs --runner=vmap

`spec` (which trials: `get_sweep(arg)` beside `get_config`), `manifest` (sweep.json: each
trial's status, shared by workers through file locks), `runners` (prepare, run_trial, work,
sequential, processes, report) and `vmap` (trials of one shape stacked in one program).
"""

from initlab.sweep.manifest import Manifest
from initlab.sweep.runners import prepare, report, run_processes, run_sequential, run_trial, work
from initlab.sweep.spec import Trial, load_sweep, trials

RUNNERS = ('sequential', 'vmap', 'processes', 'ray')
