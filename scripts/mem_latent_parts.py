"""Peak RSS growth of one latent-model part at HR 256 (small presets, random weights): the VQ-VAE decode of a
64x64 latent vs one UNet evaluation. Usage: python scripts/mem_latent_parts.py decode|unet (one part per process)."""
import resource, sys, torch
torch.set_num_threads(1)
from ldsr.autoencoder import AutoencoderConfig, build_model as build_ae
from ldsr.sr import SRConfig, build_model
part = sys.argv[1]
ae = build_ae(AutoencoderConfig(kind="vqvae", preset="small"), 1).eval()
m = build_model(SRConfig(space="latent", unet="small"), 1, 4, autoencoder=ae).eval()
z = torch.randn(1, 3, 64, 64); lr = torch.randn(1, 1, 64, 64)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    if part == "decode": m.autoencoder.decode(z)
    else: m.net(torch.cat([z, lr], 1), torch.tensor([500]))
print(part, "peak growth MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) / 1024)
