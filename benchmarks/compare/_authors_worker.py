"""Worker for benchmarks/compare/vs_authors.py: runs inside the authors' virtual environment, prints one JSON object.

Not meant to be run by hand (vs_authors.py builds the environment and passes every option). It times our
library against MadryLab's `robustness` (the paper authors' code) and `torchattacks` in one process, so both
sides use the same torch build, threads and device, on the same random CIFAR-shaped batch:

a. one PGD adversarial training step (L2, eps 0.5, step eps/5, clean start; paper C.3);
b. representation inversion (D_R construction; paper C.4): match g(target) from random starting images;
c. an untargeted L2 PGD evaluation attack on one shared model object (ours vs torchattacks.PGDL2).

Their ResNet-18 gets a copy of our ResNet-18's weights (the layouts match layer for layer), so both sides
compute the same function and their attack results can be compared number for number.

Two run-time shims, no file of robustness or torchvision changed: robustness 1.2.1 imports
`torchvision.models.utils.load_state_dict_from_url`, gone from current torchvision, so a stand-in module
exposing `torch.hub.load_state_dict_from_url` is registered first; and robustness moves tensors and models
with bare `.cuda()` calls, which are made no-ops while its code runs on a CPU-only measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.metadata
import json
import statistics
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from advfeatures.attacks import invert_representation, pgd_attack
from advfeatures.device import autocast, resolve_device, to_memory_format
from advfeatures.models import build_model
from advfeatures.training import AdversarialConfig, TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import timed  # noqa: E402

THREAT = {"l2": "2", "linf": "inf"}  # our norm names -> robustness's constraint names


def shim_torchvision_models_utils() -> None:
    """Register `torchvision.models.utils` (removed from torchvision) with the one function robustness uses."""
    import torchvision.models

    try:
        importlib.import_module("torchvision.models.utils")
    except ImportError:
        module = types.ModuleType("torchvision.models.utils")
        module.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        sys.modules["torchvision.models.utils"] = module
        torchvision.models.utils = module


@contextlib.contextmanager
def cuda_calls_stay(device: torch.device):
    """On a CPU run, make `Tensor.cuda()` / `Module.cuda()` return self while robustness code runs."""
    if device.type == "cuda":
        yield
        return
    saved = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved


class _ContiguousGrad(torch.autograd.Function):
    """Identity forward; the gradient comes back in the default (NCHW) memory layout."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


class NCHWInputGrad(torch.nn.Module):
    """--channels-last only: robustness's and torchattacks's L2 steps call `grad.view(n, -1)`, which fails on a
    channels_last gradient, so they get NCHW inputs and this wrapper hands them an NCHW input gradient (at most
    one copy per step) while the wrapped model itself runs channels_last."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, *args, **kwargs):
        return self.model(_ContiguousGrad.apply(x), *args, **kwargs)


def measure(ours_fn, theirs_fn, repeats: int, device: torch.device):
    """Warm up both once (those results are returned for the strength checks), then time `repeats` rounds, ours and
    theirs alternating within each round so that drift in the machine's speed hits both sides alike; medians.

    Returns (ours_first, ours_median_s, ours_times, theirs_first, theirs_median_s, theirs_times)."""
    ours_first, theirs_first = ours_fn(), theirs_fn()
    ours_times, theirs_times = [], []
    for _ in range(repeats):  # the warm-up is the call above: timed() itself warms nothing up here
        ours_times.append(timed(ours_fn, device, warmup=0))
        theirs_times.append(timed(theirs_fn, device, warmup=0))
    return (ours_first, statistics.median(ours_times), ours_times,
            theirs_first, statistics.median(theirs_times), theirs_times)


def copy_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Load our parameters and batch-norm buffers into their ResNet-18, in registration order, shape-checked."""
    src = [v for k, v in ours.state_dict().items() if k not in ("mean", "std")]
    dst = theirs.state_dict()
    if len(src) != len(dst):
        raise RuntimeError(f"state dicts differ in length: ours {len(src)}, theirs {len(dst)}")
    for (key, value), ours_value in zip(dst.items(), src, strict=True):
        if value.shape != ours_value.shape:
            raise RuntimeError(f"{key}: shape {tuple(value.shape)} vs ours {tuple(ours_value.shape)}")
        value.copy_(ours_value)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def train_step_row(ours, theirs, x, y, xin, device, args) -> dict:
    """a. One PGD adversarial training step (paper C.3 recipe), on copies so the other rows see the initial weights."""
    cl = args.channels_last
    adv = AdversarialConfig(steps=args.pgd_steps)  # L2, eps 0.5, step eps/5, from the clean image
    config = TrainConfig(adversarial=adv, amp=args.amp, channels_last=cl)
    ours_t, theirs_t = copy.deepcopy(ours).train(), copy.deepcopy(theirs).train()

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)

    ours_opt, theirs_opt = sgd(ours_t), sgd(theirs_t)

    def ours_train_step():  # what advfeatures.training.train_model does for one batch
        xa = pgd_attack(ours_t, xin, y, norm=adv.norm, eps=adv.eps, steps=adv.steps, step_size=adv.resolved_step_size(),
                        random_start=adv.random_start, batch_size=x.shape[0], seed=0, amp=config.amp)
        ours_t.train()
        with autocast(device, config.amp):
            logits = ours_t(to_memory_format(xa, cl))
        loss = F.cross_entropy(logits.float(), y)
        if not torch.isfinite(loss):
            raise RuntimeError("ours: training diverged")
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        ours_opt.step()
        return float(loss.detach())

    criterion = torch.nn.CrossEntropyLoss()

    def theirs_train_step():  # what robustness.train._model_loop does for one batch
        with cuda_calls_stay(device):
            output, _ = theirs_t(x, target=y, make_adv=True, constraint=THREAT[adv.norm], eps=adv.eps,
                                 step_size=adv.resolved_step_size(), iterations=adv.steps,
                                 random_start=adv.random_start, custom_loss=None, random_restarts=0, use_best=True)
        loss = criterion(output, y)
        value = loss.item()
        theirs_opt.zero_grad()
        loss.backward()
        theirs_opt.step()
        return value

    ours_loss, ours_s, ours_all, theirs_loss, theirs_s, theirs_all = measure(
        ours_train_step, theirs_train_step, args.repeats, device
    )
    return {
        "name": f"PGD-{adv.steps} adversarial training step", "theirs_lib": "robustness",
        "ours_s": ours_s, "theirs_s": theirs_s, "ours_runs": ours_all, "theirs_runs": theirs_all,
        "check": "training loss on the PGD batch (first step, same weights)",
        "ours_value": ours_loss, "theirs_value": theirs_loss,
    }


def run(args) -> dict:
    device = resolve_device(args.device)
    if device.type == "cuda":
        if device.index is None:  # "cuda" names no index, which set_device refuses
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)  # robustness's bare .cuda() calls go to the current device
    cl = args.channels_last

    shim_torchvision_models_utils()
    import torchattacks
    from robustness import datasets as rdatasets
    from robustness.model_utils import make_and_restore_model

    torch.manual_seed(args.seed)
    x = torch.rand(args.batch, 3, 32, 32).to(device)
    y = torch.randint(0, 10, (args.batch,)).to(device)
    x_target = torch.rand(args.batch, 3, 32, 32).to(device)  # other images whose representations are matched
    xin, xin_target = to_memory_format(x, cl), to_memory_format(x_target, cl)

    ours = build_model("resnet18", in_channels=3, num_classes=10, image_size=32).to(device).eval()
    with cuda_calls_stay(device):
        theirs, _ = make_and_restore_model(arch="resnet18", dataset=rdatasets.CIFAR("/tmp/cifar-unused"))
    theirs = theirs.to(device).eval()
    copy_weights(ours, theirs.model)
    if cl:  # both models channels_last; ours also gets channels_last inputs, theirs NCHW ones (see NCHWInputGrad)
        ours.to(memory_format=torch.channels_last)
        theirs.to(memory_format=torch.channels_last)
        theirs.model = theirs.attacker.model = NCHWInputGrad(theirs.model).eval()

    rows = [train_step_row(ours, theirs, x, y, xin, device, args)]

    # ---- b. representation inversion (D_R construction), no early exit on our side
    steps, step_size = args.inversion_steps, 0.1

    def ours_invert():
        return invert_representation(ours, xin_target, xin, steps=steps, step_size=step_size, norm="l2",
                                     batch_size=x.shape[0], amp=args.amp, tolerance=None)

    with torch.no_grad():
        _, target_rep = theirs(x_target, with_latent=True, with_image=False)

    # paper C.4: ||g(z) - g(x)|| / ||g(x)||, per example; plain ReLUs (no fake_relu) so that both sides
    # optimise the same objective (the per-example scale does not change normalised L2 steps)
    def inversion_loss(model, inp, target):
        _, rep = model(inp, with_latent=True)
        return (rep - target).norm(dim=1) / target.norm(dim=1), None

    def theirs_invert():
        with cuda_calls_stay(device):
            _, z = theirs(x, target=target_rep, make_adv=True, constraint="2", eps=1000.0, step_size=step_size,
                          iterations=steps, targeted=True, custom_loss=inversion_loss, use_best=True)
        return z.detach()

    def relative_error(z):
        with torch.no_grad():
            target = ours.representation(x_target)
            return float(((ours.representation(z) - target).norm(dim=1) / target.norm(dim=1)).mean())

    z_ours, ours_s, ours_all, z_theirs, theirs_s, theirs_all = measure(ours_invert, theirs_invert, args.repeats, device)
    rows.append({
        "name": f"representation inversion, {steps} steps", "theirs_lib": "robustness",
        "ours_s": ours_s, "theirs_s": theirs_s, "ours_runs": ours_all, "theirs_runs": theirs_all,
        "check": f"mean ‖g(z) - g(x)‖ / ‖g(x)‖ after {steps} steps (start {relative_error(x):.3f})",
        "ours_value": relative_error(z_ours), "theirs_value": relative_error(z_theirs),
    })

    # ---- c. untargeted L2 PGD evaluation attack on the same model object
    eps, eval_steps = 0.5, args.eval_steps
    alpha = 2.5 * eps / eval_steps
    target_model = NCHWInputGrad(ours).eval() if cl else ours  # the same model object either way
    attack = torchattacks.PGDL2(target_model, eps=eps, alpha=alpha, steps=eval_steps, random_start=False)

    def ours_eval():
        return pgd_attack(ours, xin, y, norm="l2", eps=eps, steps=eval_steps, step_size=alpha,
                          batch_size=x.shape[0], amp=args.amp)

    def theirs_eval():
        return attack(x, y).detach()

    def accuracy_and_loss(images):
        ours.eval()
        with torch.no_grad():
            logits = ours(images).float()
        return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))

    adv_ours, ours_s, ours_all, adv_theirs, theirs_s, theirs_all = measure(ours_eval, theirs_eval, args.repeats, device)
    clean_acc, clean_loss = accuracy_and_loss(xin)
    ours_acc, ours_ce = accuracy_and_loss(adv_ours)
    theirs_acc, theirs_ce = accuracy_and_loss(adv_theirs)
    max_norm = max(float((a - x).flatten(1).norm(dim=1).max()) for a in (adv_ours, adv_theirs))
    rows.append({
        "name": f"L2 PGD-{eval_steps} evaluation attack", "theirs_lib": "torchattacks",
        "ours_s": ours_s, "theirs_s": theirs_s, "ours_runs": ours_all, "theirs_runs": theirs_all,
        "check": f"robust accuracy / mean CE (clean {clean_acc:.3f} / {clean_loss:.3f}; max ‖delta‖ {max_norm:.3f})",
        "ours_value": [ours_acc, ours_ce], "theirs_value": [theirs_acc, theirs_ce],
    })

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch, "repeats": args.repeats, "amp": args.amp, "channels_last": cl,
        "params": {"ours": count(ours), "theirs": count(theirs.model)},
        "versions": {
            "torch": torch.__version__, "torch_file": torch.__file__,
            "robustness": version("robustness"), "torchattacks": version("torchattacks"),
            "advfeatures": version("advfeatures"),
        },
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--inversion-steps", type=int, default=100)
    ap.add_argument("--pgd-steps", type=int, default=7)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    if min(args.batch, args.inversion_steps, args.pgd_steps, args.eval_steps, args.repeats) < 1:
        ap.error("--batch, the step counts and --repeats must be at least 1")
    stdout, sys.stdout = sys.stdout, sys.stderr  # anything the libraries print goes to stderr; stdout is the JSON
    try:
        result = run(args)
    finally:
        sys.stdout = stdout
    print(json.dumps(result, allow_nan=True))


if __name__ == "__main__":
    main()
