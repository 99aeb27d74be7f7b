"""The development harness of drbfr's benchmarks: what BENCHMARKS.md's comparisons and a lent
GPU need, kept in the checkout and out of the wheel (`drbfr bench` is the user's command).

baselines  GFPGAN (v1 clean) and CodeFormer through spandrel, with random weights
peers      `bench/restore`: `drbfr bench restore` with those baselines timed in the same run,
           the ratios and their tables
gpu_check  `bench/gpu-check` (`make gpu-check`): the prepared check for a lent GPU
suite      `make bench`: every benchmark of BENCHMARKS.md in one run

Imported as `bench.harness` with the project root on sys.path: the scripts under bench/ put
it there, pytest through pyproject's `pythonpath`, `python -m bench.harness.suite` from the
root.
"""
