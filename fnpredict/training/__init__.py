"""Offline training (host-side, never inside the jitted step): the DGM network of kernel B."""
