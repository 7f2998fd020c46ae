"""Persistent XLA compilation cache, so a second run starts without compiling.

JAX skips programs that compile in under
``jax_persistent_cache_min_compile_time_secs`` (1 s by default) and entries
under a minimum size; fnpredict's step compiles in about that time on a fast
machine, so both thresholds are set to 0 (DESIGN §5).
"""

import hashlib
import os
import platform

import jax

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "fnpredict", "jax")


def machine_key() -> str:
    """A short key for this CPU and jax version: the cache's sub-folder.

    XLA's CPU executables are compiled for the host's instruction set; a cache
    folder shared between machines (a home directory on a network, a machine
    image handed on) would otherwise load entries built for other CPU
    features, which XLA reports as SIGILL-prone and which can crash. Keying
    the folder by the CPU flags, the architecture and the jax/jaxlib versions
    keeps every machine on its own entries.
    """
    flags = ""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    text = f"{platform.machine()}|{flags.strip()}|jax {jax.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str:
    """Point JAX's persistent compilation cache at ``path`` and cache everything.

    Args:
        path: the cache folder; default ``$FNPREDICT_CACHE_DIR`` or
            ``~/.cache/fnpredict/jax``, either with a sub-folder per CPU and
            jax version (:func:`machine_key`). A ``path`` given is used as is.

    Returns:
        The folder used.
    """
    if path is not None:
        folder = os.fspath(path)
    else:
        folder = os.path.join(os.environ.get("FNPREDICT_CACHE_DIR", DEFAULT_CACHE_DIR), machine_key())
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


__all__ = ["enable_compilation_cache", "machine_key", "DEFAULT_CACHE_DIR"]
