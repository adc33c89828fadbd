"""Builders of the paper's constructed datasets: D_R, D_NR (representation inversion) and D_rand, D_det
(targeted adversarial examples relabelled with their target).

Work is cut into fixed chunks of CHUNK examples, each with its own seed derived from (seed, chunk index), so
the constructed tensors are the same whatever the batch size, the device count or the order chunks run in;
`shard=(rank, world_size)` builds only this process's chunks (see `pipeline` for torchrun). `batch_size` is how
many images one attack or inversion step sees: several chunks at once on a GPU (thousands of images fill it),
part of one on a CPU (batches of 128-256 stay in cache); it changes the speed, not the seeding.

The same chunks make a construction resumable: given `partial` (a `PartialChunks`), a builder writes each finished
chunk to disk and takes the chunks already there instead of computing them, so a construction killed after most of
an hour (the noise-started inversions on a CPU) loses only the batch in progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .attacks import flat_norm, invert_representation, pgd_attack
from .errors import BadInputError, CorruptFileError
from .evaluation import predict
from .io import load_tensors, save_tensors

CHUNK = 512


@dataclass
class ConstructedDataset:
    images: torch.Tensor
    labels: torch.Tensor  # the label a model trained on this set sees
    original_labels: torch.Tensor  # the class of the image it was built from
    diagnostics: dict = field(default_factory=dict)


class PartialChunks:
    """The finished chunks of one construction, on disk until it ends: FOLDER/chunk_NNNNN.safetensors.

    Each file carries `key`, which must name everything the construction depends on (in a run folder: the stage's
    key, i.e. its settings and the builds of its source models). A chunk is taken only with the same key, the shape
    the construction expects and a readable file; anything else is computed again and overwritten, so chunks of
    different settings or source models never mix. Chunks are seeded by their index and the batches they are built
    in follow from the settings, so a construction resumed from its chunks equals one never interrupted (bit for
    bit, on the same machine and thread count; like a cached stage, a chunk computed under another thread count is
    taken too: the key does not hold the thread count). `reused` counts the chunks taken. In a run folder the stage
    cache removes the folder once the stage has ended (runfolder.partial_folder).
    """

    def __init__(self, folder: str | Path, key: str):
        self.folder, self.key, self.reused = Path(folder), str(key), 0

    def _path(self, chunk: int) -> Path:
        return self.folder / f"chunk_{chunk:05d}.safetensors"

    def load(self, chunk: int, shape: Sequence[int]) -> torch.Tensor | None:
        """Chunk `chunk`'s images if a usable file holds them, else None."""
        path = self._path(chunk)
        if not path.is_file():
            return None
        try:
            tensors, metadata = load_tensors(path, required=("images",))
        except CorruptFileError:
            return None
        images = tensors["images"]
        if metadata.get("key") != self.key or tuple(images.shape) != tuple(shape):
            return None
        return images

    def save(self, chunk: int, images: torch.Tensor) -> None:
        save_tensors(self._path(chunk), {"images": images}, {"key": self.key, "chunk": str(chunk)})


def _chunk_rows(chunk_ids: Sequence[int], n: int) -> list[int]:
    return [min(CHUNK, n - c * CHUNK) for c in chunk_ids]


def _reuse(partial: PartialChunks | None, chunk_ids: Sequence[int], images: torch.Tensor) -> torch.Tensor | None:
    """The group's images from `partial` when every one of its chunks is there (else None: the group is built)."""
    if partial is None:
        return None
    n, shape = images.shape[0], images.shape[1:]
    parts = [partial.load(c, (rows, *shape)) for c, rows in zip(chunk_ids, _chunk_rows(chunk_ids, n), strict=True)]
    if any(p is None for p in parts):
        return None
    partial.reused += len(parts)
    return torch.cat(parts).to(images.device, images.dtype)


def _keep(partial: PartialChunks | None, chunk_ids: Sequence[int], n: int, built: torch.Tensor) -> None:
    if partial is None:
        return
    for c, part in zip(chunk_ids, built.split(_chunk_rows(chunk_ids, n)), strict=True):
        partial.save(c, part)


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
    partial: PartialChunks | None = None,
) -> ConstructedDataset:
    """x_r = argmin_z ||g(z) - g(x)||_2 over z in [0, 1] (paper C.4), label y kept.

    `start="image"`: from a different random training image (label-independent); `start="noise"`: from
    uniform noise (the paper uses 10x the steps there). With a robust model's g this is D_R, with a standard
    model's g it is D_NR. Rows outside this process's shard are left as zeros. `partial`: keep finished chunks
    there and take those already there (PartialChunks).
    """
    if start not in ("image", "noise"):
        raise BadInputError(f"unknown inversion start {start!r}; choose 'image' or 'noise'")
    n = images.shape[0]
    start_index = choose_start_indices(n, seed) if start == "image" else None
    out = torch.zeros_like(images)
    groups = _chunk_batches(n, shard, batch_size, images.device)
    for chunk_ids, index in tqdm(groups, desc=desc, disable=not progress, leave=False, unit="batch"):
        done = _reuse(partial, chunk_ids, images)
        if done is not None:
            out[index] = done
            continue
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
        _keep(partial, chunk_ids, n, out[index])
    return ConstructedDataset(out, labels.clone(), labels.clone(), {"start": start})


def build_robust_dataset(robust_model, images, labels, **options) -> ConstructedDataset:
    """D_R: inversion through an adversarially trained model's representation."""
    return build_inverted_dataset(robust_model, images, labels, desc="D_R", **options)


def build_non_robust_dataset(standard_model, images, labels, **options) -> ConstructedDataset:
    """D_NR: inversion through a standard model's representation."""
    return build_inverted_dataset(standard_model, images, labels, desc="D_NR", **options)


RELABEL_MODES = ("rand", "det", "rand_no_true")


def relabel_targets(labels: torch.Tensor, mode: str, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Targets t: "rand" uniform over all classes (so robust features end up uncorrelated with t; about 1 in C
    targets equal the true label, and those images are simply correctly labelled), "rand_no_true" uniform over
    the C - 1 other classes (t != y always), "det" (y+1) mod C."""
    if mode == "rand":
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, num_classes, labels.shape, generator=g).to(labels.device)
    if mode == "rand_no_true":
        g = torch.Generator().manual_seed(seed)
        shift = torch.randint(1, num_classes, labels.shape, generator=g).to(labels.device)
        return (labels + shift) % num_classes
    if mode == "det":
        return (labels + 1) % num_classes
    raise BadInputError(f"unknown relabelling {mode!r}; choose from: {', '.join(RELABEL_MODES)}")


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
    partial: PartialChunks | None = None,
) -> ConstructedDataset:
    """x_adv = argmin_{||x' - x|| <= eps} CE(C(x'), t), labelled t (paper C.5): D_rand (mode "rand"), D_det ("det").

    With `keep_models` f_1..f_K the attack also keeps each f_i on the true label y: it minimises
    CE(C(x'), t) + (1/K) sum_i CE(f_i(x'), y) (Nakkiran, "Adversarial examples are just bugs, too", Distill 2019;
    with mode "det" his D_det_bugs). Without them the result is exactly the paper's set. The diagnostics record
    the mode and K ("keep_models"). `partial`: keep finished chunks there and take those already there
    (PartialChunks).
    """
    keep_models = tuple(keep_models)
    targets = relabel_targets(labels, mode, num_classes, seed)
    out = torch.zeros_like(images)
    groups = _chunk_batches(images.shape[0], shard, batch_size, images.device)
    for chunk_ids, index in tqdm(groups, desc=f"D_{mode}", disable=not progress, leave=False, unit="batch"):
        done = _reuse(partial, chunk_ids, images)
        if done is not None:
            out[index] = done
            continue
        out[index] = pgd_attack(
            model, images[index], targets[index], norm=norm, eps=eps, steps=steps, step_size=step_size,
            targeted=True, batch_size=batch_size, amp=amp, early_stop=early_stop,
            keep_models=keep_models, keep_labels=labels[index] if keep_models else None,
        )
        _keep(partial, chunk_ids, images.shape[0], out[index])
    return ConstructedDataset(out, targets, labels.clone(), {"mode": mode, "keep_models": len(keep_models)})


PATTERN_FAMILIES = ("tile", "gaussian")


def class_patterns(num_classes: int, image_shape: Sequence[int], eps: float, family: str = "tile",
                   seed: int = 0) -> torch.Tensor:
    """One fixed perturbation per class, (C, *image_shape), each of L2 norm exactly eps, made without any model.

    "tile": a random 2x2 tile per class and channel repeated over the image: the highest spatial frequency an image
    has, and the structure a random stride-2 transposed convolution of a constant map produces, which Keller Jordan
    found a far stronger shortcut than Gaussian noise (KellerJordan/cifar10-zoo, adversarial/). A convolution
    detects it at every position, and no natural image class carries it. "gaussian": i.i.d. Gaussian pixels, the
    weaker baseline.
    """
    if family not in PATTERN_FAMILIES:
        raise BadInputError(f"unknown pattern family {family!r}; choose from: {', '.join(PATTERN_FAMILIES)}")
    channels, height, width = image_shape
    g = torch.Generator().manual_seed(seed)
    if family == "tile":
        tile = torch.randn(num_classes, channels, 2, 2, generator=g, dtype=torch.float64)
        patterns = tile.repeat(1, 1, (height + 1) // 2, (width + 1) // 2)[..., :height, :width]
    else:
        patterns = torch.randn(num_classes, channels, height, width, generator=g, dtype=torch.float64)
    patterns = eps * patterns / patterns.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return patterns.float()


def build_shortcut_dataset(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    mode: str,
    num_classes: int,
    eps: float,
    family: str = "tile",
    seed: int = 0,
    clean_model: torch.nn.Module | None = None,
) -> ConstructedDataset:
    """A leakage-only control for D_rand / D_det (Keller Jordan, KellerJordan/cifar10-zoo "run1_shortcuts"): the
    same targets t as `build_relabelled_dataset` (same mode, same seed), but each image gets its target's fixed
    class pattern (`class_patterns`, L2 norm eps; clipped to [0, 1]) instead of an attack: no model makes the
    perturbation, so it carries no feature the data has. Some images stay clean, bit for bit:
    in "rand" / "rand_no_true" those whose target equals the true label (none for "rand_no_true"); in "det" those
    `clean_model` (a weakly trained standard model) already reads as the target y+1.

    Trained on, such a set can reach real test accuracy without any non-robust feature: the clean images teach
    the true classes of their subset (in D_det: the images that look like y+1), while the shortcut images are
    fitted through their patterns. How close the real D_rand / D_det come to these controls bounds what their
    accuracy says about features.
    """
    targets = relabel_targets(labels, mode, num_classes, seed)
    if mode == "det":
        if clean_model is None:
            raise BadInputError("the D_det shortcut control needs clean_model: a weakly trained standard model whose "
                                "prediction y+1 leaves an image unperturbed")
        clean = predict(clean_model, images) == targets
    else:
        clean = targets == labels
    patterns = class_patterns(num_classes, images.shape[1:], eps, family, seed).to(images.device, images.dtype)
    shifted = (images + patterns[targets]).clamp(0, 1)
    out = torch.where(clean.view(-1, *[1] * (images.dim() - 1)), images, shifted)
    return ConstructedDataset(out, targets, labels.clone(), {
        "mode": mode, "family": family, "eps": float(eps), "clean_fraction": float(clean.float().mean()),
    })


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
        "target_equals_true": float((constructed.labels == constructed.original_labels).float().mean()),
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
