"""Datasets: fixed splits, planted ground truth with known audit answers, strict input checks, safe files."""

import pytest
import torch

from advfeatures import BadInputError, CorruptFileError, load_dataset, load_dataset_file, save_dataset_file
from advfeatures.data.base import TensorImageDataset
from advfeatures.data.synthetic import PlantedFeatures, SyntheticSpec


def test_digits_split_is_fixed_and_stratified():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape[1:] == (1, 8, 8) and train.images.min() >= 0 and train.images.max() <= 1
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: ~36 per class
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images)
    image, label = test[0]
    assert image.shape == (1, 8, 8) and isinstance(label, int)


def test_synthetic_is_deterministic_and_has_the_planted_statistics():
    a, b = load_dataset("synthetic", "train"), load_dataset("synthetic", "train")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    spec = a.features.spec
    assert torch.allclose(a.features.robust.flatten(1).norm(dim=1), torch.full((10,), spec.robust_norm))
    assert torch.allclose(a.features.nonrobust.flatten(1).norm(dim=1), torch.full((10,), spec.nonrobust_norm))
    # robust and non-robust patterns are mutually orthogonal, so the two audits do not mix
    gram = a.features.robust_unit.flatten(1) @ a.features.nonrobust_unit.flatten(1).T
    assert gram.abs().max() < 1e-5
    agreement = (a.robust_class == a.labels).float().mean()
    assert abs(agreement - spec.robust_agreement) < 0.03
    test = load_dataset("synthetic", "test")
    assert not torch.equal(test.images[:10], a.images[:10])


def test_audit_known_answers():
    features = PlantedFeatures(SyntheticSpec())
    spec = features.spec
    labels = torch.arange(10)
    pure_robust = spec.background + features.robust[labels]
    audit = features.audit(pure_robust, labels)
    assert audit["robust_agrees_label"] == 1.0 and abs(audit["robust_of_label"] - 1.0) < 1e-4
    assert abs(audit["nonrobust_of_label"]) < 1e-4
    swapped = spec.background + features.robust[labels] + features.nonrobust[(labels + 1) % 10]
    audit = features.audit(swapped, (labels + 1) % 10, original_labels=labels)
    assert audit["nonrobust_agrees_label"] == 1.0 and audit["robust_agrees_label"] == 0.0
    assert audit["robust_agrees_original"] == 1.0 and audit["nonrobust_agrees_original"] == 0.0


def test_bad_images_and_labels_are_refused():
    good = torch.rand(4, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])
    with pytest.raises(BadInputError, match="NaN"):
        TensorImageDataset(torch.full((4, 1, 8, 8), float("nan")), labels)
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        TensorImageDataset(good * 255, labels)
    with pytest.raises(BadInputError, match="shape"):
        TensorImageDataset(torch.rand(4, 8, 8), labels)
    with pytest.raises(BadInputError, match="same length"):
        TensorImageDataset(good, labels[:3])
    with pytest.raises(BadInputError, match="labels must lie"):
        TensorImageDataset(good, torch.tensor([0, 1, 2, 12]), num_classes=10)
    with pytest.raises(BadInputError, match="unknown dataset"):
        load_dataset("imagenet-21k")
    with pytest.raises(BadInputError, match="split"):
        load_dataset("digits", "validation")


def test_dataset_file_round_trip_and_corruption(tmp_path):
    images, labels = torch.rand(6, 1, 8, 8), torch.arange(6) % 3
    path = tmp_path / "set.safetensors"
    save_dataset_file(path, images, labels, note="test")
    back = load_dataset_file(path)
    assert torch.equal(back["images"], images) and torch.equal(back["labels"], labels)
    assert back["labels"].dtype == torch.int64
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CorruptFileError, match="truncated"):
        load_dataset_file(path)
    with pytest.raises(BadInputError, match="no such file"):
        load_dataset_file(tmp_path / "missing.safetensors")
