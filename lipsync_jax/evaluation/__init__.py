"""Scoring generators and finished videos: `metrics` (LSE-D/LSE-C, PSNR,
SSIM, LPIPS, sync scorers), `evaluate` (the `python -m lipsync_jax.evaluate`
command), `report` (report files) and `memory_grid` (SyncTalkFace memory
slot pictures)."""
