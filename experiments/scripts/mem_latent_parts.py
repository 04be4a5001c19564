"""Peak RSS growth of one latent-model part (one part per process), after a small warm-up of every part.

    OMP_NUM_THREADS=1 python experiments/scripts/mem_latent_parts.py PART [--hr 256] \
        [--model small|SHIPPED_OR_CHECKPOINT]

PART: decode | decode_streamed | encode | encode_streamed | unet (one UNet evaluation on the latent grid).
--model small (default): the `small` VQ-VAE f=4 and UNet presets with random weights (what `ldsr bench speed`
builds); otherwise a shipped model name or checkpoint (e.g. mri-x4). Prints the part, HR size, peak growth in MB
and seconds.
"""

import argparse
import resource
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=["decode", "decode_streamed", "encode", "encode_streamed", "unet"])
    ap.add_argument("--hr", type=int, default=256)
    ap.add_argument("--model", default="small")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.model == "small":
        from ldsr.models.autoencoder import AutoencoderConfig
        from ldsr.models.autoencoder import build_model as build_ae
        from ldsr.models.sr import SRConfig, build_model

        ae = build_ae(AutoencoderConfig(kind="vqvae", preset="small"), 1).eval()
        m = build_model(SRConfig(space="latent", unet="small"), 1, 4, autoencoder=ae).eval()
    else:
        import ldsr

        m = ldsr.load(a.model).model
    ae = m.autoencoder
    c, f, n = ae.in_channels, ae.factor, a.hr // ae.factor
    cin = m.unet.config.in_channels

    def run(part: str, size: int) -> None:
        if part.startswith("decode"):
            ae.decode(torch.randn(1, ae.latent_channels, size, size), streamed=part.endswith("streamed"))
        elif part.startswith("encode"):
            ae.encode(torch.rand(1, c, f * size, f * size) * 2 - 1, streamed=part.endswith("streamed"))
        else:
            m.unet(torch.randn(1, cin, size, size), torch.tensor([10]))

    with torch.no_grad():
        for part in ("decode", "decode_streamed", "encode", "encode_streamed", "unet"):
            run(part, 8)  # kernels, thread pools and caches: not the part's activations
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        run(a.part, n)
        dt = time.perf_counter() - t
    grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(f"{a.part} HR {a.hr} ({a.model}): peak growth {grow:.1f} MB, {dt:.2f} s")


if __name__ == "__main__":
    main()
