"""nn.Modules only: DRM (drm.py), VQ autoencoder, latent diffusion U-Net."""
