"""Diffusion sampling as pure functions over diffusers schedulers (paper Eq. 8; DiffBFR)."""
