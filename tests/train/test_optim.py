"""Weight decay is masked by param role, also for stacked (scanned) params."""
import jax.numpy as jnp
import numpy as np
import optax

from initlab.train import optim


def test_weight_decay_skips_stacked_biases_and_norms():
  params = {"blocks": {"mlp": {"kernel": jnp.ones((2, 4, 4)), "bias": jnp.ones((2, 4))},
                       "norm": {"scale": jnp.ones((2, 4)), "bias": jnp.ones((2, 4))}},
            "embed": {"embedding": jnp.ones((8, 4))}}
  mask = optim._decay_mask(params)  # pylint: disable=protected-access
  assert mask["blocks"]["mlp"]["kernel"] and mask["embed"]["embedding"]
  assert not (mask["blocks"]["mlp"]["bias"] or mask["blocks"]["norm"]["scale"] or mask["blocks"]["norm"]["bias"])
  tx = optax.add_decayed_weights(0.5, mask=optim._decay_mask)  # pylint: disable=protected-access
  updates, _ = tx.update(optax.tree.zeros_like(params), tx.init(params), params)
  np.testing.assert_array_equal(updates["blocks"]["mlp"]["kernel"], 0.5)
  np.testing.assert_array_equal(updates["blocks"]["norm"]["scale"], 0.0)
