"""Networks: autoencoders, UNet presets, diffusion SR, baselines, losses, streamed/tiled decoding, weights on disk."""
