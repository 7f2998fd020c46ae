"""Persistent XLA compilation cache, so a second run starts without compiling.

JAX skips programs that compile in under
``jax_persistent_cache_min_compile_time_secs`` (1 s by default) and entries
under a minimum size; fnpredict's step compiles in about that time on a fast
machine, so both thresholds are set to 0 (DESIGN §5).
"""

import os

import jax

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "fnpredict", "jax")


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str:
    """Point JAX's persistent compilation cache at ``path`` and cache everything.

    Args:
        path: the cache folder; default ``$FNPREDICT_CACHE_DIR`` or
            ``~/.cache/fnpredict/jax``.

    Returns:
        The folder used.
    """
    folder = os.fspath(path) if path is not None else os.environ.get("FNPREDICT_CACHE_DIR", DEFAULT_CACHE_DIR)
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


__all__ = ["enable_compilation_cache", "DEFAULT_CACHE_DIR"]
