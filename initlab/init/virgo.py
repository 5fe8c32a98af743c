"""`initlab.init.virgo`: Virgo's variances (arXiv 2312.02622) as plain functions.

    fwd, bwd, var = ii.virgo.variances(senders, receivers, features, num_layers=3,
                                       hidden=64, num_classes=7)

The scheme is registered as 'virgo' (`ii.get_scheme('virgo', mode='forward')`); the code
lives in `initlab.init.families.virgo`.
"""

# pylint: disable=unused-import
from initlab.init.families.virgo import (
  MEANS,
  MODES,
  combine,
  graph_terms,
  kaiming_fan_out,
  layer_variances,
  model_variances,
  propagate,
  variances,
  virgo,
)
