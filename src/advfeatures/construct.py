"""Builders of the paper's constructed datasets: D_R, D_NR (representation inversion) and D_rand, D_det
(targeted adversarial examples relabelled with their target).

Work is cut into fixed chunks of CHUNK examples, each with its own seed derived from (seed, chunk index), so
the constructed tensors are the same whatever the batch size, the device count or the order chunks run in;
`shard=(rank, world_size)` builds only this process's chunks (see `pipeline` for torchrun). `batch_size` is how
many images one attack or inversion step sees: several chunks at once on a GPU (thousands of images fill it),
part of one on a CPU (batches of 128-256 stay in cache); it changes the speed, not the seeding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .attacks import flat_norm, invert_representation, pgd_attack
from .errors import BadInputError
from .evaluation import predict

CHUNK = 512


@dataclass
class ConstructedDataset:
    images: torch.Tensor
    labels: torch.Tensor  # the label a model trained on this set sees
    original_labels: torch.Tensor  # the class of the image it was built from
    diagnostics: dict = field(default_factory=dict)


def _chunks(n: int, shard: tuple[int, int]):
    rank, world = shard
    return [(i, slice(s, min(s + CHUNK, n))) for i, s in enumerate(range(0, n, CHUNK)) if i % world == rank]


def _chunk_batches(n: int, shard: tuple[int, int], batch_size: int, device) -> list[tuple[list[int], torch.Tensor]]:
    """This shard's chunks, grouped so that one group holds about `batch_size` images (at least one chunk):
    (chunk ids, the group's image indices)."""
    chunks = _chunks(n, shard)
    per = max(1, batch_size // CHUNK)
    groups = []
    for i in range(0, len(chunks), per):
        part = chunks[i : i + per]
        index = torch.cat([torch.arange(sl.start, sl.stop) for _, sl in part]).to(device)
        groups.append(([c for c, _ in part], index))
    return groups


def choose_start_indices(n: int, seed: int) -> torch.Tensor:
    """For each example, a different random example to start inversion from, chosen independently of labels."""
    if n < 2:
        raise BadInputError("inversion from other images needs at least two training images")
    g = torch.Generator().manual_seed(seed)
    offset = torch.randint(1, n, (n,), generator=g)
    return (torch.arange(n) + offset) % n


def build_inverted_dataset(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    start: str = "image",
    seed: int = 0,
    amp: bool = False,
    tolerance: float | None = None,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = CHUNK,
    progress: bool = True,
    desc: str = "invert",
) -> ConstructedDataset:
    """x_r = argmin_z ||g(z) - g(x)||_2 over z in [0, 1] (paper C.4), label y kept.

    `start="image"`: from a different random training image (label-independent); `start="noise"`: from
    uniform noise (the paper uses 10x the steps there). With a robust model's g this is D_R, with a standard
    model's g it is D_NR. Rows outside this process's shard are left as zeros.
    """
    if start not in ("image", "noise"):
        raise BadInputError(f"unknown inversion start {start!r}; choose 'image' or 'noise'")
    n = images.shape[0]
    start_index = choose_start_indices(n, seed) if start == "image" else None
    out = torch.zeros_like(images)
    groups = _chunk_batches(n, shard, batch_size, images.device)
    for chunk_ids, index in tqdm(groups, desc=desc, disable=not progress, leave=False, unit="batch"):
        if start == "image":
            init = images[start_index.to(images.device)[index]]
        else:
            init = torch.cat([
                torch.rand((min(CHUNK, n - c * CHUNK), *images.shape[1:]),
                           generator=torch.Generator().manual_seed(seed * 100_003 + c))
                for c in chunk_ids
            ]).to(images.device)
        out[index] = invert_representation(
            model, images[index], init, steps=steps, step_size=step_size, batch_size=batch_size, amp=amp,
            tolerance=tolerance,
        )
    return ConstructedDataset(out, labels.clone(), labels.clone(), {"start": start})


def build_robust_dataset(robust_model, images, labels, **options) -> ConstructedDataset:
    """D_R: inversion through an adversarially trained model's representation."""
    return build_inverted_dataset(robust_model, images, labels, desc="D_R", **options)


def build_non_robust_dataset(standard_model, images, labels, **options) -> ConstructedDataset:
    """D_NR: inversion through a standard model's representation."""
    return build_inverted_dataset(standard_model, images, labels, desc="D_NR", **options)


def relabel_targets(labels: torch.Tensor, mode: str, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Targets t: uniform over all classes ("rand", so robust features end up uncorrelated with t) or (y+1) mod C."""
    if mode == "rand":
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, num_classes, labels.shape, generator=g).to(labels.device)
    if mode == "det":
        return (labels + 1) % num_classes
    raise BadInputError(f"unknown relabelling {mode!r}; choose 'rand' or 'det'")


def build_relabelled_dataset(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    mode: str,
    num_classes: int,
    norm: str = "l2",
    eps: float,
    steps: int,
    step_size: float,
    seed: int = 0,
    amp: bool = False,
    early_stop: bool = False,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = CHUNK,
    progress: bool = True,
    keep_models: Sequence[torch.nn.Module] = (),
) -> ConstructedDataset:
    """x_adv = argmin_{||x' - x|| <= eps} CE(C(x'), t), labelled t (paper C.5): D_rand (mode "rand"), D_det ("det").

    With `keep_models` f_1..f_K the attack also keeps each f_i on the true label y: it minimises
    CE(C(x'), t) + (1/K) sum_i CE(f_i(x'), y) (Nakkiran, "Adversarial examples are just bugs, too", Distill 2019;
    with mode "det" his D_det_bugs). Without them the result is exactly the paper's set. The diagnostics record
    the mode and K ("keep_models").
    """
    keep_models = tuple(keep_models)
    targets = relabel_targets(labels, mode, num_classes, seed)
    out = torch.zeros_like(images)
    groups = _chunk_batches(images.shape[0], shard, batch_size, images.device)
    for _, index in tqdm(groups, desc=f"D_{mode}", disable=not progress, leave=False, unit="batch"):
        out[index] = pgd_attack(
            model, images[index], targets[index], norm=norm, eps=eps, steps=steps, step_size=step_size,
            targeted=True, batch_size=batch_size, amp=amp, early_stop=early_stop,
            keep_models=keep_models, keep_labels=labels[index] if keep_models else None,
        )
    return ConstructedDataset(out, targets, labels.clone(), {"mode": mode, "keep_models": len(keep_models)})


# ---------------------------------------------------------------- diagnostics


@torch.no_grad()
def relabelled_diagnostics(
    standard_model, robust_model, originals: torch.Tensor, constructed: ConstructedDataset, norm: str = "l2"
) -> dict:
    """Attack success, perturbation size, and how a robust model reads the images (original class vs target)."""
    hit = predict(standard_model, constructed.images) == constructed.labels
    robust_pred = predict(robust_model, constructed.images)
    delta = flat_norm(constructed.images - originals, norm)
    return {
        "attack_success": float(hit.float().mean()),
        "mean_perturbation_norm": float(delta.mean()),
        "max_perturbation_norm": float(delta.max()),
        "robust_model_reads_original": float((robust_pred == constructed.original_labels).float().mean()),
        "robust_model_reads_target": float((robust_pred == constructed.labels).float().mean()),
    }


@torch.no_grad()
def inversion_diagnostics(model, originals: torch.Tensor, constructed: ConstructedDataset, batch_size: int = 1024):
    """How well the representation was matched, and how far the images are from the originals they encode."""
    errors = []
    for s in range(0, originals.shape[0], batch_size):
        target = model.representation(originals[s : s + batch_size])
        got = model.representation(constructed.images[s : s + batch_size])
        errors.append((got - target).norm(dim=1) / target.norm(dim=1).clamp_min(1e-12))
    rel = torch.cat(errors)
    return {
        "relative_representation_error_mean": float(rel.mean()),
        "relative_representation_error_median": float(rel.median()),
        "distance_to_original_mean": float(flat_norm(constructed.images - originals).mean()),
        "model_predicts_label": float((predict(model, constructed.images) == constructed.labels).float().mean()),
    }


@torch.no_grad()
def keep_diagnostics(keep_models: Sequence[torch.nn.Module], constructed: ConstructedDataset) -> dict:
    """How often the keep models of an ensemble-keeping construction (D_det_bugs) still read the original class.

    Nakkiran's claim is that such images fool the source model while the independently trained f_i keep the true
    label; this measures the second half. Returns "keep_models_read_original" (mean over models of the fraction
    of images each predicts as `constructed.original_labels`), "keep_models_read_original_per_model" (one
    fraction per model), "keep_majority_reads_original" (fraction where more than half of the models read the
    original) and "keep_models_read_target" (mean fraction read as the assigned label, i.e. transfer).
    """
    if len(keep_models) == 0:
        raise BadInputError("keep_diagnostics needs at least one keep model")
    preds = torch.stack([predict(m, constructed.images) for m in keep_models])  # (K, N)
    original = preds == constructed.original_labels
    per_model = original.float().mean(1)
    return {
        "keep_models_read_original": float(per_model.mean()),
        "keep_models_read_original_per_model": [float(v) for v in per_model],
        "keep_majority_reads_original": float((original.sum(0) * 2 > len(keep_models)).float().mean()),
        "keep_models_read_target": float((preds == constructed.labels).float().mean()),
    }
