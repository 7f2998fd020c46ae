"""Host-side services around the pure step: the ``fnpredict stream`` server.

Nothing here is traced: these modules read input, call the jitted step, write
output, snapshots and metrics.
"""
