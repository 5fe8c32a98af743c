"""initlab.models: the Flax NNX model zoo, built by name from a config.

    import initlab.models as im
    config = im.default_config('resnet20')       # or 'mlp', 'vit', 'poincare_resnet20', ...
    model = im.build(config, rngs=nnx.Rngs(0))
    logits = model(images, train=False)
    for name, stage in model.stages(): ...       # composing the stages == model(x)
    hints = model.init_hints()                   # depth, classifier / residual-branch regexes

Every model takes `model(x, train=False)`: images (B, H, W, C) -> logits (B, classes), or
for the LM int tokens (B, T) -> logits (B, T, vocab), or for the GNNs ('gcn', 'sage', 'gin')
a graph dict (features, senders, receivers) -> node logits (N, classes); logits are float32.
Every param is tagged with logical axis names (`LOGICAL_AXES`, e.g. a conv kernel (None, None,
'conv_in', 'conv_out'), an attention query kernel ('embed', 'heads', 'kv'), stacked LM params
get 'layers' first); `logical_axis_rules(preset)` maps them onto a ('data', 'model') mesh.

The two hooks every model implements:
  stages(train=False) -> [(name, fn)]: the network as named stages (embedding/stem, each
    block or hidden layer, head); fn maps one stage's input to its output and composing
    them in order equals model(x, train). Names follow param paths ('stage2/blocks/1').
  init_hints() -> dict with
    depth: number of stages (all have weights) = len(stages());
    classifier: regex full-matching the output kernel's param path ('head/kernel');
    residual_final: regex full-matching the last kernel of every residual branch, or None
      (paths as in initlab.init.leaves(nnx.state(model, nnx.Param)); a stacked LM kernel
      holds one branch per layer);
    residual_branch: regex full-matching every kernel inside a residual branch (its last
      one included; not the stem, patch embedding, shortcuts or head), or None;
    num_branches: number of residual branches (0 without residuals);
    branch_layers: weight layers per residual branch (for Fixup-style depth scaling).

Adding a model: write its module (and its test), decorate the class with
`@register_model(name, task=..., default_config=..., input_spec=..., data_options=...)`
(see `initlab.models.registry`) and import the module at the bottom of this file. Models of your own register
the same way from your code, before the config that names them is validated or built.
"""

# pylint: disable=g-importing-member
from initlab.models.layers import ACTIVATIONS, Attention, MlpBlock, TransformerBlock
from initlab.models.registry import (
  InputSpec,
  build,
  check_fits,
  default_config,
  input_spec,
  model_names,
  preset_names,
  register_model,
  same_as_data,
)
from initlab.sharding import LOGICAL_AXES, PRESETS as SHARDING_PRESETS, logical_axis_rules

# The zoo: each module registers its model (`@register_model`) when imported here.
from initlab.models.gnn import GCN, GIN, GraphSAGE
from initlab.models.mlp import MLP
from initlab.models.poincare_resnet import PoincareResNet
from initlab.models.resnet import ResNet
from initlab.models.resnet import param_count as resnet_param_count
from initlab.models.transformer_lm import TransformerLM
from initlab.models.vgg import VGG
from initlab.models.vit import ViT
