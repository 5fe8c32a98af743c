"""Rules: first match wins, path-hashed keys, any tree type, clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import initlab.init as ii


def _tree():
  return {"conv": {"kernel": jnp.zeros((3, 3, 8, 16)), "bias": jnp.ones((16,))},
          "dense": {"kernel": jnp.zeros((32, 10)), "bias": jnp.ones((10,))},
          "norm": {"scale": jnp.zeros((16,))}}


def test_first_match_wins_and_unmatched_keep_value():
  rules = ii.Rules([(r"dense/kernel", ii.zeros()), (r".*kernel", ii.ones()), (r".*bias", ii.zeros())])
  out = rules(jax.random.key(0), _tree())
  assert np.all(out["dense"]["kernel"] == 0) and np.all(out["conv"]["kernel"] == 1)
  assert np.all(out["conv"]["bias"] == 0) and np.all(out["norm"]["scale"] == 0)


def test_same_numbers_regardless_of_tree_order_or_other_leaves():
  key = jax.random.key(3)
  a = {"x": {"kernel": jnp.zeros((16, 16))}, "y": {"kernel": jnp.zeros((16, 4))}}
  b = {"y": {"kernel": jnp.zeros((16, 4))}, "x": {"kernel": jnp.zeros((16, 16))}, "z": {"kernel": jnp.zeros((4, 4))}}
  rules = ii.Rules([(".*kernel", ii.he_normal())])
  ra, rb = rules(key, a), rules(key, b)
  for name in ("x", "y"):
    np.testing.assert_array_equal(ra[name]["kernel"], rb[name]["kernel"])
  assert not np.array_equal(ra["x"]["kernel"][:4, :4], rb["z"]["kernel"])


def test_nnx_state_linen_and_plain_dict_agree():
  key = jax.random.key(0)

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(32, 10, rngs=rngs)

  state = nnx.state(Net(nnx.Rngs(1)), nnx.Param)
  plain = {"dense": {"kernel": jnp.zeros((32, 10)), "bias": jnp.zeros((10,))}}
  linen = {"dense": {"kernel": nn.Partitioned(jnp.zeros((32, 10)), ("embed", "mlp")), "bias": jnp.zeros((10,))}}
  rules = ii.Rules([(r"dense/kernel", ii.orthogonal())])
  from_state = rules(key, state)["dense"]["kernel"][...]
  from_plain = rules(key, plain)["dense"]["kernel"]
  from_linen = rules(key, linen)["dense"]["kernel"]
  assert isinstance(from_linen, nn.Partitioned) and from_linen.names == ("embed", "mlp")
  np.testing.assert_array_equal(from_state, from_plain)
  np.testing.assert_array_equal(from_linen.value, from_plain)


def test_roles_filter_and_named_scheme():
  out = ii.get_scheme("ones")(jax.random.key(0), _tree())
  assert np.all(out["conv"]["kernel"] == 1) and np.all(out["dense"]["kernel"] == 1)
  assert np.all(out["conv"]["bias"] == 1) and np.all(out["norm"]["scale"] == 0)  # untouched
  out = ii.Rules([(".*", ii.zeros())], roles=("bias",))(jax.random.key(0), _tree())
  assert np.all(out["conv"]["bias"] == 0) and np.all(out["norm"]["scale"] == 0)


def test_unknown_names_and_unmatched_rules_raise():
  with pytest.raises(KeyError, match="unknown init scheme 'nope'.*orthogonal"):
    ii.get_scheme("nope")
  with pytest.raises(KeyError, match="unknown initializer 'nope'.*he_normal"):
    ii.get_initializer("nope")
  with pytest.raises(ValueError, match=r"rule 'attn/.\*' matched no param.*conv/kernel"):
    ii.Rules([(r"attn/.*", ii.zeros())])(jax.random.key(0), _tree())


def test_uninferable_layout_names_the_path():
  tree = {"odd": {"kernel": jnp.zeros((7,))}, "weird": {"thing": jnp.zeros((3, 3))}}
  with pytest.raises(ii.LayoutError, match="odd/kernel"):
    ii.Rules([(r"odd/kernel", ii.he_normal())])(jax.random.key(0), tree)
  with pytest.raises(ii.LayoutError, match="weird/thing"):
    ii.Rules([(r"weird/thing", ii.he_normal())])(jax.random.key(0), tree)
  with pytest.raises(ii.LayoutError, match="logical axis names"):
    ii.infer_spec("a/kernel", (3, 4), ("embed",))
  # an explicit spec makes it work
  rules = ii.Rules([(r"weird/thing", ii.he_normal())], specs={r"weird/thing": ii.ParamSpec("kernel", (0,), (1,))})
  assert rules(jax.random.key(0), tree)["weird"]["thing"].std() > 0


def test_abstract_tree_materializes_matched_leaves():
  abstract = {"d": {"kernel": jax.ShapeDtypeStruct((8, 4), jnp.bfloat16)}}
  out = ii.Rules([(".*", ii.lecun_normal())])(jax.random.key(0), abstract)
  assert out["d"]["kernel"].dtype == jnp.bfloat16 and out["d"]["kernel"].shape == (8, 4)


def test_chain_and_model_level_schemes():
  tree = {"block": {"conv1": {"kernel": jnp.zeros((3, 3, 4, 4))}, "conv2": {"kernel": jnp.zeros((3, 3, 4, 4))}},
          "head": {"kernel": jnp.zeros((4, 10))}}
  ctx = ii.InitContext(hints={"residual_final": r"block/conv2/kernel", "classifier": r"head/kernel",
                              "num_branches": 16, "branch_layers": 2})
  out = ii.get_scheme("fixup")(jax.random.key(0), tree, ctx)
  assert np.all(out["head"]["kernel"] == 0) and np.all(out["block"]["conv2"]["kernel"] == 0)
  assert float(out["block"]["conv1"]["kernel"].std()) > 0
  out = ii.get_scheme("zero_full")(jax.random.key(0), tree, ctx)
  np.testing.assert_array_equal(out["block"]["conv1"]["kernel"][1, 1], np.eye(4))
  assert np.all(out["block"]["conv2"]["kernel"] == 0)
  with pytest.raises(KeyError, match="needs the model hint 'classifier'"):
    ii.get_scheme("fixup")(jax.random.key(0), tree, ii.InitContext())
  chained = ii.chain(ii.get_scheme("ones"), ii.Rules([("head/kernel", ii.zeros())]))
  out = chained(jax.random.key(0), tree)
  assert np.all(out["head"]["kernel"] == 0) and np.all(out["block"]["conv1"]["kernel"] == 1)
