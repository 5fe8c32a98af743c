"""initlab.diagnostics: signal propagation at init.

    import initlab.diagnostics as dg
    d = dg.measure(model, batch, key=key)                      # one model, its current params
    results = dg.compare(lambda rngs: build(cfg, rngs=rngs),
                         {"he": get_scheme("he_normal"), "lecun": get_scheme("lecun_normal")},
                         batch, key)
    dg.plot_depth_profiles(results, out_dir); dg.write_table(results, out_dir)

Per-layer forward q/var/c (Poole et al. 2016, Schoenholz et al. 2017), backward gradient
moments for a random linear probe loss, and input–output Jacobian singular values
(Pennington et al. 2017). Models expose `stages(train) -> [(name, fn)]`.
`coord_check`: per-layer activation RMS vs width over the first optimizer steps, per width
parametrization (standard / ntk / μP; `plot_coord_check` draws it).
Command line: `python -m initlab.diagnostics --help` (`initlab.diagnostics.cli`).
"""

# pylint: disable=g-importing-member
from initlab.diagnostics.coord_check import (
  CoordCheck,
  coord_check,
  default_widths,
  plot_coord_check,
)
from initlab.diagnostics.jacobian import singular_values
from initlab.diagnostics.propagation import Diagnostics, compare, default_context, measure
from initlab.diagnostics.plots import plot_depth_profiles, plot_jacobian_spectrum
from initlab.diagnostics.stats import (
  correlation,
  log2_slope,
  relu_c_map,
  second_moment,
  unit_variance,
)
from initlab.diagnostics.tables import write_table
