"""Training: one task per stage on the shared accelerate loop (loop.py)."""
