"""Runtime services: precision, compilation cache, snapshots, metrics."""
