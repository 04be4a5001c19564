"""Remove the initial weights' share from an EMA trained without warm-up (checkpoints before the EMA warm-up).

    python experiments/scripts/ema_bias_correct.py RUN_DIR CONFIG OUT_RUN_DIR

A plain EMA with decay d keeps d^N of the initial weights after N steps (34 % after 1074 steps at 0.999). The
initial weights are rebuilt exactly as ldsr.training.loop builds them (same seed, same order), and the EMA of the
trained
parameters becomes (EMA - d^N init) / (1 - d^N): the exponential average of the trained weights alone, as in
Adam's bias correction. Frozen weights and buffers are copied. OUT_RUN_DIR gets a checkpoint folder with the
corrected ema.safetensors (also as model.safetensors) and the original config.json, loadable by ldsr.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ldsr.config import load_config
from ldsr.models import checkpoint as ck
from ldsr.models.build import build_model as build_from_config
from ldsr.training.rng import seed_everything

if len(sys.argv) != 4:
    raise SystemExit(__doc__)
run, config, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
last = ck.latest_checkpoint(run)
if last is None:
    raise SystemExit(f"{run}: no checkpoint")
cfg = load_config(config)
seed_everything(cfg.seed if cfg.train.seed is None else cfg.train.seed)
net = build_from_config(cfg)
init = net.state_dict()
ema = load_file(str(last / "ema.safetensors"))
n = int(last.name.removeprefix("step_"))
d = cfg.train.ema_decay
share = d**n
print(f"{run}: step {n}, decay {d}: initial weights' share of the EMA {share:.4f}")
trained = {name for name, p in net.named_parameters() if p.requires_grad}
fixed = {}
for k, v in ema.items():
    if k in trained and v.is_floating_point() and init[k].shape == v.shape:
        fixed[k] = ((v - share * init[k].to(v.dtype)) / (1 - share)).contiguous()
    else:
        fixed[k] = v
dst = out / "checkpoints" / last.name
shutil.rmtree(out, ignore_errors=True)
dst.mkdir(parents=True)
with safe_open(str(last / "ema.safetensors"), "pt") as f:
    meta = f.metadata()
save_file(fixed, str(dst / "ema.safetensors"), metadata=meta)
save_file(fixed, str(dst / "model.safetensors"), metadata=meta)
shutil.copy(last / "config.json", dst / "config.json")
(out / "checkpoints" / "latest").write_text(last.name)
print("wrote", dst)
