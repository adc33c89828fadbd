"""Sharded construction across 2 gloo processes gives exactly the one-process tensors; `reproduce` under torchrun
(2 gloo processes) gives the one-process run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from advfeatures import load_dataset_file
from advfeatures.cli import main
from advfeatures.construct import CHUNK, build_inverted_dataset, build_relabelled_dataset
from advfeatures.distributed import ProcessGroup, gather_shards, shutdown
from advfeatures.io import load_tensors
from advfeatures.models import build_model


def _model():
    torch.manual_seed(0)
    return build_model("mlp", in_channels=1, num_classes=10, image_size=8, hidden=16).eval()


def _data():
    g = torch.Generator().manual_seed(1)
    n = 2 * CHUNK + 37  # three chunks, the last one partial
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _build(group: ProcessGroup):
    model, (x, y) = _model(), _data()
    inverted = build_inverted_dataset(model, x, y, steps=3, step_size=0.1, start="noise", seed=5,
                                      shard=group.shard, progress=False).images
    relabelled = build_relabelled_dataset(model, x, y, mode="rand", num_classes=10, eps=0.5, steps=3,
                                          step_size=0.1, seed=5, shard=group.shard, progress=False)
    return gather_shards(inverted, group), gather_shards(relabelled.images, group), relabelled.labels


def _worker(rank: int, port: int, path: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    inverted, relabelled, labels = _build(ProcessGroup(rank, 2))
    if rank == 0:
        torch.save({"inverted": inverted, "relabelled": relabelled, "labels": labels}, path)
    _teardown()


def _teardown() -> None:
    """Both ranks reach this point before either tears gloo down: a rank that destroys its group while the other
    is still using the connection was seen to abort the other (SIGABRT, "terminate called without an active
    exception") once in CI. It was seen again (2026-12-02, the divergence test, rank 1, with the barrier): shutdown()
    now collects garbage first, so a DDP model left in a reference cycle is freed while the group still exists."""
    dist.barrier()
    shutdown(ProcessGroup(dist.get_rank(), dist.get_world_size()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_build_the_same_tensors_as_one(tmp_path):
    path = str(tmp_path / "two.pt")
    mp.spawn(_worker, args=(_free_port(), path), nprocs=2, join=True)
    two = torch.load(path, weights_only=True)
    inverted, relabelled, labels = _build(ProcessGroup())
    assert torch.equal(two["inverted"], inverted)
    assert torch.equal(two["relabelled"], relabelled)
    assert torch.equal(two["labels"], labels)
    assert (inverted.flatten(1).abs().sum(1) > 0).all()  # every row was built by some rank


def _diverging_worker(rank: int, port: int, out: str):
    """Rank 1's loss becomes NaN; both ranks must stop with the divergence error instead of waiting on each other."""
    from advfeatures import training
    from advfeatures.training import ModelSpec, TrainConfig, train_new_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    if rank == 1:
        real = training.F.cross_entropy
        training.F = type("Patched", (), {"cross_entropy": staticmethod(lambda *a, **k: real(*a, **k) * float("nan"))})
    x, y = _data()
    try:
        train_new_model(ModelSpec("mlp", {"hidden": 8}), x, y, 10, TrainConfig(epochs=1, batch_size=32),
                        progress=False, group=ProcessGroup(rank, 2))
        message = "no error"
    except RuntimeError as err:
        message = str(err)
    with open(f"{out}.{rank}", "w") as f:
        f.write(message)
    _teardown()


def test_divergence_on_one_rank_stops_every_rank(tmp_path):
    out = str(tmp_path / "msg")
    mp.spawn(_diverging_worker, args=(_free_port(), out), nprocs=2, join=True)
    messages = [Path(f"{out}.{rank}").read_text() for rank in (0, 1)]
    for message in messages:
        assert "training diverged" in message and "lower the lr" in message, message
    assert "loss nan on rank 1" in messages[1]


# ---------------------------------------------------------------- the whole pipeline under torchrun

# float32 (--no-amp): the test compares DDP with one process, whose models agree to ~1e-6 in float32; under bf16
# autocast (synthetic's default where the CPU has it) each step's rounding lets two summation orders drift to ~2e-4
PIPELINE = ["reproduce", "--preset", "synthetic", "--quick", "--no-progress", "--device", "cpu", "--no-amp"]


def _torchrun(args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), "-m", "advfeatures", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_torchrun_two_processes_reproduce_the_one_process_run(tmp_path):
    """DDP training differs from one process only in floating-point summation order (the same global batches,
    the same mean gradient), so models agree to ~1e-6, constructions (sharded by seeded chunk) follow them, and
    the reported accuracies agree (identical in practice; allowed to differ by 2 test images)."""
    one, two = tmp_path / "one", tmp_path / "two"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank (OMP_NUM_THREADS=1): oneDNN picks kernels by thread count,
    try:  # and in channels_last (synthetic's layout) another kernel moves the 100-step constructions by ~2e-3
        assert main([*PIPELINE, "--out", str(one)]) == 0
    finally:
        torch.set_num_threads(threads)
    proc = _torchrun([*PIPELINE, "--out", str(two)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("done in") == 1  # only rank 0 logs
    # small_cnn has no batch norm; nets with batch norm use per-rank batch statistics on CPU (SyncBatchNorm
    # is CUDA-only), so they match one process only approximately and are not compared here
    for name in ("D", "D_adv", "D_det", "transfer_mlp_D"):
        a, _ = load_tensors(one / "synthetic" / "models" / f"{name}.safetensors")
        b, _ = load_tensors(two / "synthetic" / "models" / f"{name}.safetensors")
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-4), (name, key)
    for name in ("D_R", "D_NR", "D_rand", "D_det"):
        a = load_dataset_file(one / "synthetic" / "datasets" / f"{name}.safetensors")
        b = load_dataset_file(two / "synthetic" / "datasets" / f"{name}.safetensors")
        assert torch.equal(a["labels"], b["labels"])
        assert (a["images"] - b["images"]).abs().max() < 1e-3, name
        assert (b["images"].flatten(1).abs().sum(1) > 0).all()  # every row built by some rank
    r1 = json.loads((one / "synthetic" / "results.json").read_text())
    r2 = json.loads((two / "synthetic" / "results.json").read_text())
    n_test = r1["settings"]["limit_test"]
    for name, entry in r1["accuracy"].items():
        for key in ("clean", "robust"):
            assert abs(entry[key] - r2["accuracy"][name][key]) <= 2 / n_test, (name, key)
    assert r2["theory"]["figures"] and (two / "report.html").is_file()
    # a re-run under torchrun resumes every stage from rank 0's records
    again = _torchrun([*PIPELINE, "--out", str(two)])
    stage_lines = [line for line in again.stdout.splitlines() if line.startswith("  ")]
    assert again.returncode == 0 and len(stage_lines) >= 10
    assert all(line.split()[-1] == "cached" for line in stage_lines), again.stdout


def test_torchrun_bad_input_exits_2_on_every_rank_without_hanging(tmp_path):
    (tmp_path / "foreign.txt").write_text("not a run")
    proc = _torchrun([*PIPELINE, "--out", str(tmp_path)], timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("holds no advfeatures run") == 2  # each rank: one line, no traceback
    assert "Traceback" not in proc.stderr.split("holds no advfeatures run")[0]
