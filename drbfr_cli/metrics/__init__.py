"""Image-quality metrics (PSNR, SSIM, LPIPS, FID, NIQE, identity hook) and evaluation reports."""
