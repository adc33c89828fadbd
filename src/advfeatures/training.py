"""Standard and PGD adversarial training on in-memory tensors, with epoch checkpoints for resume.

Adversarial training (Madry et al., 2018; paper C.3) replaces each batch by PGD examples generated against
the current model (in eval mode, so batch-norm statistics see only the training inputs) and takes an SGD
step on them. The paper's recipe is L2 PGD with 7 steps of eps/5 from the clean image.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .attacks import check_norm, pgd_attack
from .data.base import check_images_labels
from .device import autocast, compile_model, to_memory_format
from .distributed import ProcessGroup, sync_module
from .errors import BadInputError, CorruptFileError
from .io import load_tensors, save_tensors
from .validation import check_eps, check_int, check_real, check_seed, check_step_size
from .validation import check_norm as _check_norm


@dataclass
class AdversarialConfig:
    norm: str = "l2"
    eps: float = 0.5
    steps: int = 7  # paper C.3
    step_size: float | None = None  # None: eps / 5 (paper C.3)
    random_start: bool = False  # paper: from the clean image

    def __post_init__(self):
        # a NaN or zero radius trains a standard model and labels it adversarial; zero steps likewise
        _check_norm(self.norm, "adversarial norm")
        check_eps(self.eps, "adversarial eps", positive=True)
        check_int("adversarial steps", self.steps, low=1)
        check_step_size(self.step_size, "adversarial step_size")

    def resolved_step_size(self) -> float:
        return self.eps / 5 if self.step_size is None else self.step_size


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"  # "step": one 10x drop (paper Table 3) | "cosine" | "onecycle" | "constant"
    lr_drop_at: float = 0.5  # fraction of training after which the step schedule drops the lr 10x
    warmup_epochs: float = 0.0  # linear warm-up, in epochs
    crop_padding: int = 0  # random-crop augmentation: pad by this many pixels and crop back (0: off)
    flip: bool = False  # random horizontal flips (not for digits)
    label_smoothing: float = 0.0
    weight_average: float | None = None  # decay of an exponential moving average of the weights, used at the end
    adversarial: AdversarialConfig | None = None
    seed: int = 0
    amp: bool = False  # bf16 autocast on CUDA
    channels_last: bool = False
    compile: bool | str = False  # torch.compile the model before training (True: inductor, or a backend name)

    def __post_init__(self):
        if isinstance(self.adversarial, dict):
            self.adversarial = AdversarialConfig(**self.adversarial)
        if self.schedule not in ("step", "cosine", "onecycle", "constant"):
            raise BadInputError(f"unknown lr schedule {self.schedule!r}; choose step, cosine, onecycle or constant")
        if self.weight_average is not None and not 0 < self.weight_average < 1:
            raise BadInputError(f"weight_average must be a decay in (0, 1), got {self.weight_average}")
        # every number through validation.py: NaN fails these (a bare `lr <= 0` lets NaN through)
        check_int("epochs", self.epochs, low=0)
        check_int("batch_size", self.batch_size, low=1)
        check_real("lr", self.lr, low=0.0, low_open=True)
        check_real("momentum", self.momentum, low=0.0)
        check_real("weight_decay", self.weight_decay, low=0.0)
        check_real("lr_drop_at", self.lr_drop_at, low=0.0, high=1.0)
        check_real("warmup_epochs", self.warmup_epochs, low=0.0)
        check_int("crop_padding", self.crop_padding, low=0)
        check_real("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        check_seed(self.seed)
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise BadInputError("epochs must be >= 0, batch_size >= 1 and lr > 0")
        if self.adversarial is not None:
            check_norm(self.adversarial.norm)

    def as_dict(self) -> dict:
        return asdict(self)


def learning_rate(config: TrainConfig, progress: float) -> float:
    """The lr at `progress` epochs into training (fractional epochs allowed)."""
    if config.warmup_epochs and progress < config.warmup_epochs:
        return config.lr * (progress + 1e-3) / config.warmup_epochs
    frac = progress / max(config.epochs, 1e-9)
    if config.schedule == "step":
        return config.lr * (0.1 if frac >= config.lr_drop_at else 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    if config.schedule == "onecycle":  # linear up for 20%, linear down to 0
        return config.lr * (frac / 0.2 if frac < 0.2 else max(0.0, (1 - frac) / 0.8))
    return config.lr


def augment(x: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Batched random crop (with zero padding) and horizontal flip; no per-sample Python loops."""
    n, _, h, w = x.shape
    if config.crop_padding:
        p = config.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if config.flip:
        flip = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous()


class WeightAverage:
    """Exponential moving average of a model's parameters (buffers are copied), applied to the model at the end.

    Averaged weights sit in flatter regions of the loss; for adversarial training on CIFAR-10 they raise robust
    accuracy by a point or two (Gowal et al., 2020, "Uncovering the limits of adversarial training"). On digits
    they did not (benchmarks/RESULTS.md), so no preset uses them.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        parameters = dict(model.named_parameters())
        for k, v in model.state_dict().items():
            if k in parameters:
                self.state[k].lerp_(v.float(), 1 - self.decay)
            else:  # buffers (batch-norm statistics, normalisation constants) follow the live model
                self.state[k].copy_(v)

    def apply_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.state.items()})


def _save_checkpoint(path: Path, model, optimizer, epoch: int, generator: torch.Generator,
                     average: WeightAverage | None = None) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if average is not None:
        tensors.update({f"average.{k}": v for k, v in average.state.items()})
    for i, group_state in enumerate(optimizer.state_dict()["state"].values()):
        if "momentum_buffer" in group_state and group_state["momentum_buffer"] is not None:
            tensors[f"momentum.{i}"] = group_state["momentum_buffer"]
    tensors["generator_state"] = generator.get_state()
    save_tensors(path, tensors, {"epoch": str(epoch)})


def _load_checkpoint(path: Path, model, optimizer, generator: torch.Generator,
                     average: WeightAverage | None = None) -> int:
    tensors, meta = load_tensors(path, required=("generator_state",))
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if average is not None:
            average.state = {k: tensors[f"average.{k}"].float() for k in average.state}
        state = optimizer.state_dict()
        for i, pid in enumerate(state["param_groups"][0]["params"]):
            if f"momentum.{i}" in tensors:
                state["state"][pid] = {"momentum_buffer": tensors[f"momentum.{i}"]}
        optimizer.load_state_dict(state)
        generator.set_state(tensors["generator_state"].cpu())
        return int(meta["epoch"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CorruptFileError(f"{path}: training checkpoint does not match this run ({err})") from err


def train_model(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    *,
    progress: bool = True,
    desc: str = "train",
    checkpoint: str | Path | None = None,
    group: ProcessGroup | None = None,
) -> dict:
    """Train `model` in place on tensors (already on the model's device); returns a history dict.

    With `checkpoint`, the model, optimizer and data order are saved after every epoch and a re-run resumes
    from the last finished epoch; the checkpoint is deleted when training completes.

    With a distributed `group` (torchrun), the model is wrapped in DistributedDataParallel: every rank draws the
    same data order and augmentation, takes its contiguous slice of each global batch (and makes that slice's
    adversarial examples), and the loss is scaled so the averaged gradient is the mean over the whole global
    batch, i.e. the one-process gradient up to summation order. Only rank 0 writes the checkpoint; at the end
    every rank holds rank 0's parameters and buffers.
    """
    group = group or ProcessGroup()
    num_classes = model.head.out_features if hasattr(model, "head") else None
    check_images_labels(images, labels, num_classes, source=desc)
    device = images.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    start_epoch = 0
    average = WeightAverage(model, config.weight_average) if config.weight_average else None
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and checkpoint.exists():
        try:
            start_epoch = _load_checkpoint(checkpoint, model, optimizer, generator, average)
        except CorruptFileError:
            group.barrier()
            if group.is_main:
                checkpoint.unlink(missing_ok=True)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if config.compile:
        compile_model(model, config.compile)
    trained = model
    if group.distributed:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":  # global batch statistics, as one process has (CPU ranks keep their own)
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    n = images.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    history = {"loss": [], "train_accuracy": [], "seconds": 0.0}
    adv = config.adversarial
    t0 = time.perf_counter()
    bar = tqdm(total=config.epochs, initial=start_epoch, desc=desc, disable=not (progress and group.is_main),
               leave=False, unit="ep")
    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = torch.randperm(n, generator=generator, device=device)
        # sums stay on the device and are read once per epoch: no step waits for the host
        loss_sum = torch.zeros((), device=device)
        correct_sum = torch.zeros((), dtype=torch.long, device=device)
        finite = torch.ones((), dtype=torch.bool, device=device)
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            global_batch = idx.shape[0]
            if global_batch < group.world_size:  # a last batch too small to give every rank an example
                continue
            x, y = images[idx], labels[idx]
            x = augment(x, config, generator) if (config.crop_padding or config.flip) else x
            x = to_memory_format(x, config.channels_last)
            if group.distributed:  # this rank's slice (augmentation above consumed the shared generator)
                x, y = x.tensor_split(group.world_size)[group.rank], y.tensor_split(group.world_size)[group.rank]
            if adv is not None:
                # one draw per step either way (the data order after it depends on it); read on the host only
                # when a random start will use it
                drawn = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device)
                attack_seed = int(drawn) if adv.random_start else 0
                x = pgd_attack(
                    model, x, y, norm=adv.norm, eps=adv.eps, steps=adv.steps, step_size=adv.resolved_step_size(),
                    random_start=adv.random_start, batch_size=x.shape[0],
                    seed=attack_seed + group.rank, amp=config.amp,
                )
                model.train()
            for param_group in optimizer.param_groups:
                param_group["lr"] = learning_rate(config, epoch + step / steps_per_epoch)
            with autocast(device, config.amp):
                logits = trained(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            finite &= torch.isfinite(loss)
            optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks; weighting each rank's mean by its share of the global batch
            # (times the world size) makes that average the global-batch mean even for unequal slices
            scale = y.shape[0] * group.world_size / global_batch
            (loss * scale if group.distributed else loss).backward()
            optimizer.step()
            if average is not None:
                average.update(model)
            loss_sum += loss.detach() * y.shape[0]
            correct_sum += (logits.argmax(1) == y).sum()
        # checked once an epoch (a per-step check would make every step wait for the device); under DDP every rank
        # must stop together, or the others would wait on this one's gradients forever
        if not group.all_agree(bool(finite)):
            where = f" on rank {group.rank}, non-finite on at least one rank" if group.distributed else ""
            raise RuntimeError(
                f"{desc}: training diverged (loss {loss.item()}{where}) at epoch {epoch}; lower the lr"
            )
        total_loss, correct = float(loss_sum), int(correct_sum)
        total_loss, correct = group.sum([total_loss, correct])
        history["loss"].append(total_loss / n)
        history["train_accuracy"].append(correct / n)
        bar.update(1)
        bar.set_postfix(loss=f"{total_loss / n:.3f}", acc=f"{correct / n:.3f}")
        if checkpoint and epoch + 1 < config.epochs and group.is_main:
            _save_checkpoint(checkpoint, model, optimizer, epoch + 1, generator, average)
    bar.close()
    if average is not None:
        average.apply_to(model)
    sync_module(model, group)
    group.barrier()  # no rank may still be reading the checkpoint when rank 0 deletes it
    if checkpoint and group.is_main:
        checkpoint.unlink(missing_ok=True)
    model.eval()
    history["seconds"] = time.perf_counter() - t0
    return history


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a dataset, for the normalisation inside a model."""
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


@dataclass
class ModelSpec:
    """Which architecture to build and how (arguments beyond shape, e.g. width)."""

    arch: str = "small_cnn"
    options: dict = field(default_factory=dict)


def train_new_model(
    spec: ModelSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: TrainConfig,
    *,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    progress: bool = True,
    desc: str = "train",
    checkpoint: str | Path | None = None,
    group: ProcessGroup | None = None,
):
    """Seed, build and train a fresh model; returns (model, history). The same seed gives the same model on CPU."""
    from .models import build_model

    torch.manual_seed(config.seed)
    model = build_model(
        spec.arch, in_channels=images.shape[1], num_classes=num_classes, image_size=images.shape[-1],
        mean=mean, std=std, **spec.options,
    ).to(images.device)
    if hasattr(model, "init_from_data"):  # data-dependent layers (FastNet's whitening stem) are set before training
        model.init_from_data(images)
    history = train_model(
        model, images, labels, config, progress=progress, desc=desc, checkpoint=checkpoint, group=group
    )
    return model, history
