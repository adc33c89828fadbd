"""Worker for benchmarks/compare/vs_authors_import.py: runs inside the authors' virtual environment, prints one JSON
object.

Not meant to be run by hand (vs_authors_import.py builds the environment and passes every option).

1. robustness: the authors' CIFAR ResNet-50 from their own `make_and_restore_model(arch="resnet50",
   dataset=CIFAR)`, wrapped in DataParallel as their `train_model` does, with their `make_optimizer_and_schedule`
   (their CIFAR defaults: SGD lr 0.1, momentum 0.9, weight decay 5e-4, StepLR 50 / 0.1); a few of their
   adversarial training steps (L2 PGD through `model(x, target=y, make_adv=True, ...)`, cross-entropy, SGD) so
   the optimizer holds momentum buffers, then every BatchNorm's statistics and affine parameters are perturbed so
   that they matter. The checkpoint is written as their training loop writes it: `torch.save({"model",
   "optimizer", "schedule", "epoch", "amp", "adv_prec1"}, path, pickle_module=dill)`. Their own loader
   (`make_and_restore_model(resume_path=path)`, dill) reads it back; that restored model is the reference.
2. RobustBench: `Engstrom2019RobustnessNet` (the authors' ResNet-50 with `mu` / `sigma` buffers) holding the same
   weights, and the WRN-28-10 `Standard` (random weights, perturbed BatchNorm), each saved as a state dict where
   RobustBench's `load_model` looks for it (MODEL_DIR/cifar10/<threat>/<name>.pt), then read back with that
   `load_model` (no download: the file is there) as the reference. Where robustbench cannot be imported, the
   classes come from its architecture files loaded on their own, and the report says so.

Each file is imported with `advfeatures.interop.import_checkpoint` and reloaded with `load_model`; logits and the
representation (robustness: `with_latent=True`; RobustBench: the input of the final linear layer) are compared
on the same random images in [0, 1], and for robustness also on images outside [0, 1] (both sides clamp).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
from _authors_worker import cuda_calls_stay, shim_torchvision_models_utils

from advfeatures.interop import import_checkpoint
from advfeatures.models import load_model

CPU = torch.device("cpu")


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def calibrate_batchnorm(model: torch.nn.Module, seed: int, batches: int = 4, batch: int = 32) -> None:
    """BatchNorm statistics measured on inputs, as training would leave them: a deep network with random weights
    and default statistics blows its activations up (logits ~1e6), where float32 rounding alone exceeds 1e-4."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand(batch, 3, 32, 32, generator=g))
    for m in norms:
        m.momentum = 0.1
    model.eval()


def perturb_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that every buffer of the file matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.mul_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.add_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.mul_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=g))


def compare(name: str, reference: str, theirs: torch.nn.Module, theirs_fn, ours: torch.nn.Module,
            images: dict[str, torch.Tensor]) -> dict:
    """Max abs differences of logits and representation, per input set and precision; argmax agreement.

    float32 is what both libraries run; float64 (both models cast, the same inputs) takes rounding out of the
    comparison, so any difference left there is a mapping error (a wrong buffer, eps, clamp or normalisation)
    whatever the scale of the logits."""
    row = {"name": name, "reference": reference, "checks": []}
    for dtype in (torch.float32, torch.float64):
        if dtype == torch.float64:
            theirs, ours = theirs.double(), ours.double()
        for label, x in images.items():
            row["checks"].append(_check(f"{label}, {str(dtype).removeprefix('torch.')}", theirs_fn, ours,
                                        x.to(dtype)))
    theirs.float(), ours.float()
    return row


def _check(label: str, theirs_fn, ours, x: torch.Tensor) -> dict:
    with torch.no_grad():
        t_logits, t_rep = theirs_fn(x)
        o_logits, o_rep = ours(x), ours.representation(x)
    return {
            "inputs": label, "n": int(x.shape[0]),
            "logits_max_abs_diff": float((o_logits - t_logits).abs().max()),
            "logits_max_abs": float(t_logits.abs().max()),
            "representation_max_abs_diff": float((o_rep - t_rep).abs().max()),
            "representation_max_abs": float(t_rep.abs().max()),
            "argmax_agree": float((o_logits.argmax(1) == t_logits.argmax(1)).float().mean()),
    }


def with_linear_input(model: torch.nn.Module, linear: torch.nn.Linear):
    """model(x) -> (logits, the input of `linear`): the representation of a model with no with_latent option."""
    captured = {}
    linear.register_forward_pre_hook(lambda module, inputs: captured.__setitem__("rep", inputs[0].detach()))

    def forward(x):
        logits = model(x)
        return logits, captured["rep"].flatten(1)

    return forward


# ------------------------------------------------------------------------------------------------ robustness


def robustness_row(args, work: Path, images: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    shim_torchvision_models_utils()
    import dill  # the authors' environment has it; imported here so that --help runs without it
    from robustness import datasets as rdatasets
    from robustness.model_utils import make_and_restore_model
    from robustness.train import make_optimizer_and_schedule

    dataset = rdatasets.CIFAR("/tmp/cifar-unused")
    with cuda_calls_stay(CPU):
        model, _ = make_and_restore_model(arch="resnet50", dataset=dataset)
    model = torch.nn.DataParallel(model)  # as train_model does; on a CPU it just calls the module
    train_args = types.SimpleNamespace(lr=args.lr, momentum=0.9, weight_decay=5e-4, mixed_precision=False,
                                       custom_lr_multiplier=None, lr_interpolation="step", step_lr=50,
                                       step_lr_gamma=0.1, epochs=150)
    opt, schedule = make_optimizer_and_schedule(train_args, model, None, None)
    criterion = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in range(args.train_steps):  # what robustness.train._model_loop does per batch, adversarial training
        x = torch.rand(args.train_batch, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (args.train_batch,), generator=g)
        with cuda_calls_stay(CPU):
            output, _ = model(x, target=y, make_adv=True, constraint="2", eps=0.5, step_size=0.1,
                              iterations=args.attack_steps, random_start=False, use_best=True)
        loss = criterion(output, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    schedule.step()
    calibrate_batchnorm(model, args.seed)
    perturb_batchnorm(model, args.seed)
    sd_info = {"model": model.state_dict(), "optimizer": opt.state_dict(),
               "schedule": schedule and schedule.state_dict(), "epoch": 150, "amp": None,
               "adv_prec1": torch.tensor(69.24)}
    path = work / "checkpoint.pt.best"
    torch.save(sd_info, path, pickle_module=dill)  # robustness/train.py's save_checkpoint

    with cuda_calls_stay(CPU):  # their own loader (dill) reads it back: the reference
        theirs, checkpoint = make_and_restore_model(arch="resnet50", dataset=dataset, resume_path=str(path))
    theirs = theirs.eval()
    out = work / "robustness_resnet50.safetensors"
    imported = import_checkpoint(path, out)
    ours = load_model(out)

    def theirs_fn(x):
        return theirs(x, with_latent=True, with_image=False)

    row = compare("robustness CIFAR ResNet-50 (dill checkpoint, make_and_restore_model)",
                  "robustness make_and_restore_model(resume_path=...)", theirs, theirs_fn, ours, images)
    row.update(file_mb=path.stat().st_size / 2**20, summary=imported.summary(),
               top_level_keys=sorted(map(str, checkpoint)), state_keys=len(sd_info["model"]),
               optimizer_buffers=len(opt.state_dict()["state"]))
    classifier = {k: v.clone() for k, v in model.module.model.state_dict().items()}
    return row, classifier


# ----------------------------------------------------------------------------------------------- RobustBench


def _load_file_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def robustbench_api():
    """(Engstrom2019RobustnessNet, WideResNet, load_model or None, how they were obtained)."""
    try:
        if importlib.util.find_spec("autoattack") is None:
            # robustbench/eval.py imports AutoAttack from a git-only dependency at import time; nothing here
            # evaluates, so a stand-in module lets the package (and its load_model) import.
            stub, state = types.ModuleType("autoattack"), types.ModuleType("autoattack.state")
            stub.AutoAttack, state.EvaluationState, stub.state = object, object, state
            sys.modules.update({"autoattack": stub, "autoattack.state": state})
        from robustbench.model_zoo.architectures.wide_resnet import WideResNet
        from robustbench.model_zoo.cifar10 import Engstrom2019RobustnessNet
        from robustbench.utils import load_model as rb_load_model

        how = f"robustbench {version('robustbench')} (its load_model)"
        return Engstrom2019RobustnessNet, WideResNet, rb_load_model, how
    except Exception as err:  # any import failure: fall back to the architecture files
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"robustbench is neither importable ({reason}) nor installed")
    arch_dir = Path(next(iter(spec.submodule_search_locations))) / "model_zoo" / "architectures"
    resnet = _load_file_module("rb_resnet", arch_dir / "resnet.py")
    wide = _load_file_module("rb_wide_resnet", arch_dir / "wide_resnet.py")

    class Engstrom2019RobustnessNet(resnet.ResNet):  # model_zoo/cifar10.py's definition
        def __init__(self):
            super().__init__(resnet.Bottleneck, [3, 4, 6, 3])
            self.register_buffer("mu", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
            self.register_buffer("sigma", torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1))

        def forward(self, x):
            return super().forward((x - self.mu) / self.sigma)

    how = (f"robustbench {version('robustbench')} architecture files (resnet.py, wide_resnet.py) loaded on their "
           f"own, Engstrom2019RobustnessNet as model_zoo/cifar10.py defines it, no load_model: the package did not "
           f"import ({reason})")
    return Engstrom2019RobustnessNet, wide.WideResNet, None, how


def robustbench_rows(args, work: Path, images: dict[str, torch.Tensor], classifier: dict) -> tuple[list, str]:
    Engstrom, WideResNet, rb_load, how = robustbench_api()
    model_dir = work / "robustbench_models"
    rows = []

    def reference(name: str, threat: str, net: torch.nn.Module) -> tuple[torch.nn.Module, str]:
        if rb_load is None:
            return net.eval(), "the RobustBench class itself"
        return rb_load(name, model_dir=str(model_dir), dataset="cifar10", threat_model=threat).eval(), \
            f"robustbench load_model('{name}', threat_model='{threat}')"

    # Engstrom2019Robustness: the authors' ResNet-50 as RobustBench hosts it (mu / sigma inside the model)
    net = Engstrom()
    missing, unexpected = net.load_state_dict(classifier, strict=False)
    assert set(missing) == {"mu", "sigma"} and not unexpected, (missing, unexpected)
    path = model_dir / "cifar10" / "L2" / "Engstrom2019Robustness.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    theirs, loader = reference("Engstrom2019Robustness", "L2", net)
    imported = import_checkpoint(path, work / "engstrom.safetensors")
    rows.append(compare("RobustBench Engstrom2019Robustness (ResNet-50, mu/sigma)", loader, theirs,
                        with_linear_input(theirs, theirs.linear), load_model(work / "engstrom.safetensors"),
                        {k: v for k, v in images.items() if k == "in [0, 1]"}))
    rows[-1]["summary"] = imported.summary()

    # Standard: WRN-28-10 on raw [0, 1] input
    torch.manual_seed(args.seed + 1)
    wrn = WideResNet(depth=28, widen_factor=10)
    perturb_batchnorm(wrn, args.seed + 1)
    path = model_dir / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrn.state_dict(), path)
    theirs, loader = reference("Standard", "Linf", wrn)
    imported = import_checkpoint(path, work / "standard.safetensors")
    small = {k: v[: args.wrn_batch] for k, v in images.items() if k == "in [0, 1]"}
    rows.append(compare("RobustBench Standard (WRN-28-10)", loader, theirs, with_linear_input(theirs, theirs.fc),
                        load_model(work / "standard.safetensors"), small))
    rows[-1]["summary"] = imported.summary()
    return rows, how


def run(args) -> dict:
    torch.manual_seed(args.seed)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed + 100)
    x = torch.rand(args.batch, 3, 32, 32, generator=g)
    images = {"in [0, 1]": x, "in [-0.3, 1.3] (clamped by both)": x * 1.6 - 0.3}
    row, classifier = robustness_row(args, work, images)
    rows = [row]
    rb_rows, how = robustbench_rows(args, work, images, classifier)
    rows += rb_rows
    return {
        "torch_threads": torch.get_num_threads(), "batch": args.batch, "wrn_batch": args.wrn_batch,
        "train_steps": args.train_steps, "lr": args.lr, "robustbench_source": how, "rows": rows,
        "versions": {"torch": torch.__version__, "robustness": version("robustness"), "dill": version("dill"),
                     "robustbench": version("robustbench"), "advfeatures": version("advfeatures")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--wrn-batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--attack-steps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    stdout, sys.stdout = sys.stdout, sys.stderr  # anything the libraries print goes to stderr; stdout is the JSON
    try:
        result = run(args)
    finally:
        sys.stdout = stdout
    print(json.dumps(result, allow_nan=True))


if __name__ == "__main__":
    main()
