"""Benchmarks of `drbfr restore` and of the training stages (`drbfr bench restore|train|flops`).

measure    timing (median of repeats after warm-up, synchronised on GPUs), peak host and GPU
           memory, FLOP counts on shape-only (meta) modules, the machine's description
inputs     photos, aligned faces or synthetic images; canvases of k faces at known positions
restore    the restore benchmark: restore_model (model stages, restorer at each batch size),
           profile (each network of one restoration) and restore_runs (whole `restore_images`
           runs: the stages around the model from their records, batching, scaling);
           restore_report its tables; peers (other restorers) come from the caller
train      one optimizer step of each training stage; flops their FLOPs and projected runs
report     the table type, cell formats, terminal and Markdown rendering; the training tables
random_bundle  bundles of a preset's networks with random weights (no training needed)

Speed does not depend on the weights, so every model is a random-weight one unless a trained
bundle is given. Results are plain dicts, written as JSON. The development harness (the
GFPGAN / CodeFormer peers, the GPU check, `make bench`) is the checkout's bench/harness.
"""
