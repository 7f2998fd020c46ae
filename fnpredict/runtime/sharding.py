"""Spreading assets over devices with ``jax.sharding`` (and hosts with ``jax.distributed``).

The predictor is written for one asset; a batch of assets is a state whose
leaves carry a leading ``assets`` axis. Placing that axis on a 1-D device mesh
lets ``jax.jit(jax.vmap(fp.predict, ...))`` run each device's share of the
assets where it lives, with no communication (assets are independent). On
several hosts, call ``jax.distributed.initialize()`` first; ``jax.devices()``
then spans every host and the same code applies.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def asset_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"assets"`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("assets",))


def shard_assets(tree, mesh: Mesh, axis: int = 0):
    """Place every array leaf of ``tree`` with its ``axis`` split over the mesh.

    The size of that axis must be a multiple of the number of devices.
    """
    def place(leaf):
        leaf = jax.numpy.asarray(leaf)
        if leaf.shape[axis] % mesh.size:
            raise ValueError(
                f"asset axis of size {leaf.shape[axis]} does not split over {mesh.size} devices"
            )
        spec = [None] * leaf.ndim
        spec[axis] = "assets"
        return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec(*spec)))

    return jax.tree_util.tree_map(place, tree)


__all__ = ["asset_mesh", "shard_assets"]
