"""Assets over processes (hosts) with ``jax.distributed``.

Every process owns a contiguous block of the assets: it builds the states and
holds the data of its block only, and :func:`predict_assets` assembles them
into global arrays sharded over a 1-D ``"assets"`` mesh that spans the devices
of every process. One ``jax.jit(jax.vmap(fp.predict))`` then runs each block
where it lives (assets are independent: no communication in the step), and the
predictions are gathered so that every process returns the same global
``(time, assets)`` array.

On CPU, cross-process collectives (the final gather) use gloo. The recipe for
a GPU cluster is in the docs (``docs/usage/distributed.md``): one process per
host (or per GPU), ``initialize(coordinator, n, i)`` with the address of
process 0, each process feeding its block; nothing else changes.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

import fnpredict as fp

from .sharding import asset_mesh


def initialize(coordinator_address: str, num_processes: int, process_id: int, *, cpu: bool = False) -> None:
    """Join the job: ``jax.distributed.initialize`` (with gloo collectives on CPU).

    Call before any other JAX work in the process.
    """
    if cpu:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def local_block(n_assets: int) -> slice:
    """The assets this process owns (contiguous, equal blocks, in process order)."""
    count = jax.process_count()
    if n_assets % jax.device_count():
        raise ValueError(f"{n_assets} assets do not split over {jax.device_count()} devices")
    per = n_assets // count
    start = jax.process_index() * per
    return slice(start, start + per)


def _global(mesh, local, axis: int, n_assets: int):
    spec = [None] * local.ndim
    spec[axis] = "assets"
    shape = list(local.shape)
    shape[axis] = n_assets
    return jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec(*spec)), local, tuple(shape))


def predict_assets(config, local_data, key, n_assets: int, hyperparams=None) -> np.ndarray:
    """Predict all assets, each process passing its own block of the data.

    Args:
        config: the predictor config (one asset).
        local_data: ``(time, local assets)`` observations of this process's
            block (``local_block(n_assets)`` of the global columns).
        key: the key of ``fp.predict``, the same in every process (every asset
            gets the same key schedule, as in ``fnpredict stream --assets``).
        n_assets: the global number of assets.

    Returns:
        The global ``(time, assets)`` predictions, in every process.
    """
    mesh = asset_mesh()
    local_data = np.asarray(local_data)
    n_local = local_data.shape[1]
    states = jax.vmap(lambda _: fp.init(config, hyperparams=hyperparams))(jnp.arange(n_local))
    states = jax.tree_util.tree_map(lambda leaf: _global(mesh, np.asarray(leaf), 0, n_assets), states)
    data = _global(mesh, local_data, 1, n_assets)
    run = jax.jit(jax.vmap(fp.predict, in_axes=(0, 1, None), out_axes=(0, 1)))
    _, outputs = run(states, data, key)
    return np.asarray(multihost_utils.process_allgather(outputs.prediction, tiled=True))


__all__ = ["initialize", "local_block", "predict_assets"]
