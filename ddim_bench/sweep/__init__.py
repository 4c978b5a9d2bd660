"""The sweep: a checkpoint sampled over a grid of cells × seed blocks, each (cell, seed block) scored and stored as
one record (:mod:`ddim_bench.results.record`).

``prepare`` checks everything that can be checked before the first sample and loads what the run shares;
``run`` is the pass over the records (claims, ranks, storage, W&B); ``console`` its lines; ``plan`` the cost shown
by ``plan=true``.  ``ddim_bench.apps.sweep`` is the console script around it.
"""
