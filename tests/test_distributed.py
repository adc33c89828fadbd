"""Sharded construction across 2 gloo processes gives exactly the one-process tensors."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from advfeatures.construct import CHUNK, build_inverted_dataset, build_relabelled_dataset
from advfeatures.distributed import ProcessGroup, gather_shards
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
    dist.destroy_process_group()


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
