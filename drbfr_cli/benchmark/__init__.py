"""Benchmarks of `drbfr restore` and of the training stages (`drbfr bench restore|train`).

measure    timing (median of repeats after warm-up, synchronised on GPUs), peak host and GPU
           memory, FLOP counts on shape-only (meta) modules, the machine's description
baselines  GFPGAN (v1 clean) and CodeFormer through spandrel, with random weights
inputs     photos, aligned faces or synthetic images; canvases of k faces at known positions
restore    the restore benchmark: restore_model (model stages, restorer at each batch size,
           baselines, ratios) and restore_pipeline (the stages around the model, whole runs,
           scaling); restore_report its tables
train      one optimizer step of each training stage
report     the table type, cell formats, terminal and Markdown rendering; the training tables
random_bundle  bundles of a preset's networks with random weights (no training needed)
suite      `make bench`: every benchmark of BENCHMARKS.md in one run

Speed does not depend on the weights, so every model is a random-weight one unless a trained
bundle is given. Results are plain dicts, written as JSON.
"""
