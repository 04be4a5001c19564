"""ldsr.training.loop under a 2-process launch (DDP over gloo on 127.0.0.1, CPU only): the gradient all-reduce,
the data shards and the main-process-only checkpoints and log.

Each rank is a subprocess of this interpreter with the torchrun-style environment (MASTER_ADDR/PORT, RANK,
WORLD_SIZE, LOCAL_RANK) that accelerate's PartialState reads; it runs `train()` and reports, as JSON, a hash
of its final weights, the sample numbers it read and the checkpoints it wrote.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ldsr.config import load_config
from ldsr.training.loop import _ShardStream, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny"

WORKER = r"""
import hashlib, json, os, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
import ldsr.models.build as B
import ldsr.models.checkpoint as ck
import ldsr.data.datasets as data
import ldsr.training.loop as T
from ldsr.config import load_config

config, out, *overrides = sys.argv[1:]
built, seen, saves = [], [], []

build_model = B.build_model
def record_build(cfg, state=None):
    built.append(build_model(cfg, state))
    return built[-1]
B.build_model = record_build

build_train_dataset = data.build_train_dataset
class Recorder(torch.utils.data.Dataset):
    def __init__(self, ds):
        self.ds = ds
    def __len__(self):
        return len(self.ds)
    def __getitem__(self, k):
        seen.append(int(k))
        return self.ds[k]
data.build_train_dataset = lambda *a, **k: Recorder(build_train_dataset(*a, **k))

save_checkpoint = ck.save_checkpoint
def save(folder, **kw):
    saves.append(Path(folder).name)
    return save_checkpoint(folder, **kw)
ck.save_checkpoint = save

final = T.train(load_config(config, overrides), progress=False)
sd = built[0].state_dict()
h = hashlib.sha256()
for k in sorted(sd):
    h.update(k.encode())
    h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
Path(out).write_text(json.dumps({"rank": int(os.environ["RANK"]), "final": str(final), "hash": h.hexdigest(),
                                 "seen": seen, "saves": saves}))
# Leave together and close the group: a process exiting while gloo's threads still run can abort in C++
# ("terminate called without an active exception", exit -6), which a launcher would report as a failure.
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A ceiling, not an expected duration (about 10 s idle; 40 s measured on the loaded 2-core machine): it only
# decides how long a hung launch takes to fail, so it is generous for a loaded CI runner (`pytest -n 2`).
_LAUNCH_S = 300.0
_ADDRESS_IN_USE = ("eaddrinuse", "address already in use")


def _launch(
    tmp_path: Path, config: Path, overrides: list[str], world: int = 2, timeout: float = _LAUNCH_S
) -> list[dict]:
    """Run `train()` in `world` processes (gloo, 127.0.0.1); their JSON reports, by rank. The rendezvous port is
    free when picked but can be taken before rank 0 listens on it (another test's launch under `pytest -n`):
    then the launch is repeated on a new port (rank 0 fails at once with EADDRINUSE, before writing anything)."""
    for _attempt in range(3):
        codes, logs = _run_ranks(tmp_path, config, overrides, world, timeout)
        if all(c == 0 for c in codes) or not any(m in log.lower() for log in logs for m in _ADDRESS_IN_USE):
            break
    for rank, (code, log) in enumerate(zip(codes, logs)):
        assert code == 0, f"rank {rank} exited with {code}:\n{log[-4000:]}"
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(world)]


def _run_ranks(
    tmp_path: Path, config: Path, overrides: list[str], world: int, timeout: float
) -> tuple[list[int], list[str]]:
    """Start the ranks on a fresh port and wait for all of them; as soon as one fails the others are killed
    (they would wait for it in a collective until `timeout`). Exit codes and logs (files, not pipes: a chatty
    rank can never block on a full pipe while the others wait for it)."""
    port = _free_port()
    procs, log_paths = [], []
    for rank in range(world):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "TORCHELASTIC_"))}
        env.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
            CUDA_VISIBLE_DEVICES="",  # CPU + gloo even on a GPU machine
            PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )  # fmt: skip
        if Path("/sys/class/net/lo").exists():
            env["GLOO_SOCKET_IFNAME"] = "lo"
        (tmp_path / f"rank{rank}.json").unlink(missing_ok=True)
        log_paths.append(tmp_path / f"rank{rank}.log")
        with open(log_paths[-1], "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, str(config), str(tmp_path / f"rank{rank}.json"), *overrides],
                env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
    deadline, killed = time.monotonic() + timeout, []
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one rank failed: the others would wait for it
            time.sleep(0.1)
    finally:
        for rank, p in enumerate(procs):
            if p.poll() is None:
                p.kill()
                p.wait()
                killed.append(rank)
    why = "another rank failed" if time.monotonic() < deadline else f"still running after {timeout:g} s"
    logs = [(f"[killed: {why}]\n" if r in killed else "") + path.read_text(errors="replace")
            for r, path in enumerate(log_paths)]  # fmt: skip
    codes = [int(p.returncode) for p in procs]
    return codes, logs


def _hash(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_shard_stream() -> None:
    take = lambda s, n: [k for k, _ in zip(s, range(n))]  # noqa: E731
    assert take(_ShardStream(3, 2), 6) == list(range(6, 12))  # one process: SampleStream(3 * 2)
    assert take(_ShardStream(1, 2, rank=0, world=2), 4) == [4, 5, 8, 9]
    assert take(_ShardStream(1, 2, rank=1, world=2), 4) == [6, 7, 10, 11]
    with pytest.raises(ValueError, match="rank"):
        _ShardStream(0, 2, rank=2, world=2)


def test_two_processes_all_reduce_shards_and_one_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    run = tmp_path / "ddp"
    reports = _launch(tmp_path, TINY / "srcnn.yaml", [f"train.run_dir={run}", "train.steps=3"])
    r0, r1 = reports
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["hash"] == r1["hash"]  # the DDP all-reduce keeps the replicas identical
    assert Path(r0["final"]) == Path(r1["final"]) == run / "checkpoints" / "step_000003"
    # disjoint shards: micro-batch m of rank r reads m * 2 * 2 + r * 2 + (0, 1)
    assert r0["seen"] == [0, 1, 4, 5, 8, 9] and r1["seen"] == [2, 3, 6, 7, 10, 11]
    # checkpoints and the log come from the main process only
    assert r0["saves"] == ["step_000002", "step_000003"] and r1["saves"] == []
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000002", "step_000003"]
    with open(run / "log.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    raw = load_file(str(run / "checkpoints" / "step_000003" / "model.safetensors"))
    assert _hash(raw) == r0["hash"]
    state = json.loads((run / "checkpoints" / "step_000003" / "config.json").read_text())
    assert state["step"] == 3

    # The averaged gradients of 2 x 2 samples are those of one process reading the same 4 samples per step.
    one = train(load_config(TINY / "srcnn.yaml", [f"train.run_dir={tmp_path / 'one'}", "train.steps=3",
                                                  "train.batch_size=4"]), progress=False)  # fmt: skip
    ref = load_file(str(one / "model.safetensors"))
    assert set(ref) == set(raw)
    for k in ref:
        torch.testing.assert_close(raw[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)


def test_two_processes_gan_with_accumulation(tmp_path: Path) -> None:
    """Two optimizers (D unused in the generator step and G in the discriminator step) and no_sync micro-batches."""
    run = tmp_path / "gan"
    reports = _launch(tmp_path, TINY / "esrgan_gan.yaml",
                      [f"train.run_dir={run}", "train.steps=2", "train.grad_accum=2", "train.val_every=0"])  # fmt: skip
    assert reports[0]["hash"] == reports[1]["hash"]
    assert reports[0]["seen"] == [0, 1, 4, 5, 8, 9, 12, 13] and reports[1]["seen"] == [2, 3, 6, 7, 10, 11, 14, 15]
    assert reports[0]["saves"] == ["step_000002"] and reports[1]["saves"] == []
