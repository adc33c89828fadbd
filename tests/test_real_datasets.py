"""Real-dataset loaders on tiny files in the exact on-disk formats: shapes, pixels, labels, errors, safety.

Every file is generated in tmp_path (see fake_formats.py), so these tests run offline in a few seconds.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_formats import (
    cifar_images,
    make_cifar10,
    make_cifar100,
    make_imagenet,
    make_mnist,
    make_released_folder,
    make_svhn,
    py2_pickle,
    write_cifar_batch,
    write_image,
)

from advfeatures.data import DATASETS, as_tensors, load_dataset, load_dataset_file, save_dataset_file
from advfeatures.data import torchvision_sets as tvs
from advfeatures.data.imagefolders import RESTRICTED_IMAGENET_RANGES
from advfeatures.errors import BadInputError, CorruptFileError

# ---------------------------------------------------------------------------------------------------------
# Hostile pickles: each would create `marker` if anything in it ran.


class ShellPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class OpenPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class TensorHolder:
    """A harmless custom class: loading it still needs code, so it must be refused too."""

    def __init__(self):
        self.images = torch.zeros(2, 3, 4, 4)


def assert_names(err: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(err.value)
    assert str(path) in message, message
    assert "\n" not in message, message
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------------------------------------------------
# Registry and data root


def test_registered_with_root():
    for name in ("cifar10", "cifar100", "svhn", "mnist", "imagefolder", "restricted_imagenet"):
        assert DATASETS[name].needs_root


def test_default_root_env_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVFEATURES_DATA", str(tmp_path / "env"))
    assert tvs.data_root() == tmp_path / "env"
    assert tvs.data_root(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("ADVFEATURES_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tvs.data_root() == tmp_path / "data"


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def test_cifar10_real_format(tmp_path):
    written = make_cifar10(tmp_path, per_batch=4)
    train = load_dataset("cifar10", "train", tmp_path)
    test = load_dataset("cifar10", "test", tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert float(train.images.min()) >= 0 and float(train.images.max()) <= 1
    assert train.labels[:8].tolist() == [0, 1, 2, 3, 1, 2, 3, 4]
    assert train.num_classes == 10 and train.classes[0] == "airplane" and train.classes[9] == "truck"
    expected = np.concatenate([written[f"data_batch_{k}"] for k in range(1, 6)])
    assert torch.equal((train.images * 255).round().to(torch.uint8), torch.from_numpy(expected))


def test_cifar_pixel_lands_at_its_channel_row_column(tmp_path):
    images = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    row = images.reshape(2, -1)
    row[1, 2 * 1024 + 5 * 32 + 7] = 200  # byte offset in the stored row: blue plane, row 5, column 7
    write_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch", images, [3, 4])
    test = load_dataset("cifar10", "test", tmp_path)
    assert test.images[1, 2, 5, 7] == pytest.approx(200 / 255)
    assert float(test.images.sum()) == pytest.approx(200 / 255)


def test_cifar_reads_python3_protocol2_pickles(tmp_path):
    """Batches re-pickled by Python 3 spell bytes as _codecs.encode calls; the safe reader allows that."""
    images = cifar_images(3, seed=5)
    batch = {b"data": images.reshape(3, -1), b"labels": [7, 8, 9], b"batch_label": b"testing batch 1 of 1"}
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    test = load_dataset("cifar10", "test", tmp_path)
    assert test.labels.tolist() == [7, 8, 9]
    assert torch.equal((test.images * 255).round().to(torch.uint8), torch.from_numpy(images))


def test_cifar100_fine_labels_and_names(tmp_path):
    written = make_cifar100(tmp_path, n=6)
    train = load_dataset("cifar100", "train", tmp_path)
    assert train.images.shape == (6, 3, 32, 32) and train.num_classes == 100
    assert train.labels.tolist() == [0, 17, 34, 51, 68, 99]
    assert train.classes[17] == "fine17" and len(train.classes) == 100
    assert torch.equal((train.images * 255).round().to(torch.uint8), torch.from_numpy(written["train"]))
    assert len(load_dataset("cifar100", "test", tmp_path)) == 6


def test_cifar_missing_root_and_missing_files(tmp_path):
    with pytest.raises(BadInputError) as err:
        load_dataset("cifar10", "train", tmp_path / "nowhere")
    assert_names(err, tmp_path / "nowhere", "does not exist", "--download", "cifar-10-batches-py/")
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(BadInputError) as err:
        load_dataset("cifar10", "train", tmp_path)
    assert_names(err, tmp_path / "cifar-10-batches-py" / "data_batch_3", "missing")
    with pytest.raises(BadInputError) as err:
        load_dataset("cifar100", "test", tmp_path)
    assert_names(err, tmp_path / "cifar-100-python" / "test", "missing")


def test_cifar_truncated_batch(tmp_path):
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CorruptFileError) as err:
        load_dataset("cifar10", "test", tmp_path)
    assert_names(err, path, "truncated")


@pytest.mark.parametrize(
    "batch, words",
    [
        ({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, ["(N, 3072)"]),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, ["2 images"]),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, ["0..9"]),
        ({"images": np.zeros((2, 3072), np.uint8)}, ["expected keys"]),
    ],
)
def test_cifar_wrong_contents(tmp_path, batch, words):
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir()
    path.write_bytes(py2_pickle(batch))
    with pytest.raises(CorruptFileError) as err:
        load_dataset("cifar10", "test", tmp_path)
    assert_names(err, path, *words)


@pytest.mark.parametrize("payload", [ShellPayload, OpenPayload])
@pytest.mark.parametrize("nested", [False, True])
def test_malicious_cifar_batch_is_refused_unrun(tmp_path, payload, nested):
    marker = tmp_path / "pwned"
    evil = payload(marker)
    obj = {b"data": evil, b"labels": [0]} if nested else evil
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(CorruptFileError) as err:
        load_dataset("cifar10", "test", tmp_path)
    assert_names(err, path, "refused")
    assert not marker.exists()


def test_download_uses_official_source_then_safe_reader(tmp_path, monkeypatch):
    calls = []

    class FakeUtils:
        @staticmethod
        def download_and_extract_archive(url, root, md5=None, **kwargs):
            calls.append((url, md5))
            make_cifar10(Path(root))

    monkeypatch.setattr(tvs, "_tv_download_utils", lambda: FakeUtils)
    test = load_dataset("cifar10", "test", tmp_path / "fresh", download=True)
    assert len(test) == 4
    assert calls == [(tvs.CIFAR10_URL, tvs.CIFAR10_MD5)]
    load_dataset("cifar10", "test", tmp_path / "fresh", download=True)  # present now: no second download
    assert len(calls) == 1


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    class OfflineUtils:
        @staticmethod
        def download_url(*args, **kwargs):
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tvs, "_tv_download_utils", lambda: OfflineUtils)
    with pytest.raises(BadInputError) as err:
        load_dataset("svhn", "test", tmp_path, download=True)
    assert_names(err, tmp_path, "could not download", "test_32x32.mat")


# ---------------------------------------------------------------------------------------------------------
# SVHN


def test_svhn_real_format(tmp_path):
    x = make_svhn(tmp_path, "test", digits=[0, 1, 9, 0, 5])
    test = load_dataset("svhn", "test", tmp_path)
    assert test.images.shape == (5, 3, 32, 32) and test.num_classes == 10
    assert test.labels.tolist() == [0, 1, 9, 0, 5]  # the stored 10 means the digit 0
    n, c, h, w = 3, 1, 4, 29
    assert test.images[n, c, h, w] == pytest.approx(x[h, w, c, n] / 255)
    assert torch.equal((test.images * 255).round().to(torch.uint8), torch.from_numpy(x.transpose(3, 2, 0, 1)))


def test_svhn_missing_and_corrupt(tmp_path):
    with pytest.raises(BadInputError) as err:
        load_dataset("svhn", "train", tmp_path)
    assert_names(err, tmp_path / "train_32x32.mat", "missing")
    make_svhn(tmp_path, "train", digits=[1, 2])
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptFileError) as err:
        load_dataset("svhn", "train", tmp_path)
    assert_names(err, path, "MATLAB")


def test_svhn_wrong_shape(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(CorruptFileError) as err:
        load_dataset("svhn", "test", tmp_path)
    assert_names(err, tmp_path / "test_32x32.mat", "(32, 32, 3, N)")


# ---------------------------------------------------------------------------------------------------------
# MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    images = make_mnist(tmp_path, "test", labels=[7, 2, 1, 0], gz=gz)
    test = load_dataset("mnist", "test", tmp_path)
    assert test.images.shape == (4, 1, 28, 28) and test.labels.tolist() == [7, 2, 1, 0]
    assert test.images[2, 0, 13, 20] == pytest.approx(images[2, 13, 20] / 255)
    assert test.classes == [str(d) for d in range(10)]


def test_mnist_bad_files(tmp_path):
    make_mnist(tmp_path, "train", labels=[1, 2, 3])
    raw = tmp_path / "MNIST" / "raw"
    labels_path = raw / "train-labels-idx1-ubyte"
    blob = labels_path.read_bytes()
    labels_path.write_bytes(blob[:-1])
    with pytest.raises(CorruptFileError) as err:
        load_dataset("mnist", "train", tmp_path)
    assert_names(err, labels_path, "truncated")
    labels_path.write_bytes(b"\x00\x00\x08\x03" + blob[4:])  # an images magic where labels belong
    with pytest.raises(CorruptFileError) as err:
        load_dataset("mnist", "train", tmp_path)
    assert_names(err, labels_path, "2049")
    make_mnist(tmp_path, "test", labels=[1, 2])
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(BadInputError) as err:
        load_dataset("mnist", "test", tmp_path)
    assert_names(err, raw / "t10k-labels-idx1-ubyte", "missing")


# ---------------------------------------------------------------------------------------------------------
# imagefolder


def make_folder_tree(root: Path) -> None:
    write_image(root / "train" / "red" / "a.png", (255, 0, 0))
    write_image(root / "train" / "red" / "b.jpg", (250, 5, 5))
    write_image(root / "train" / "blue" / "a.png", (0, 0, 255))
    write_image(root / "val" / "blue" / "c.png", (10, 20, 30), size=(20, 16))


def test_imagefolder_lazy_dataset(tmp_path):
    make_folder_tree(tmp_path)
    train = load_dataset("imagefolder", "train", tmp_path)
    assert train.classes == ["blue", "red"] and train.num_classes == 2 and len(train) == 3
    image, label = train[0]
    assert label == 0 and image.shape == (3, 10, 12) and image.dtype == torch.float32
    assert torch.allclose(image[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # PNG: exact pixels
    assert [y for _, y in (train[i] for i in range(3))] == [0, 1, 1]
    test = load_dataset("imagefolder", "test", tmp_path, size=8)  # ROOT/val serves as the test split
    image, label = test[0]
    assert image.shape == (3, 8, 8) and label == 0
    assert torch.allclose(image[:, 4, 4], torch.tensor([10, 20, 30]) / 255, atol=1 / 255)
    assert as_tensors(load_dataset("imagefolder", "train", tmp_path, size=6)).images.shape == (3, 3, 6, 6)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(BadInputError, match="needs a root"):
        load_dataset("imagefolder", "train", None)
    write_image(tmp_path / "flat" / "cat" / "a.png", (1, 2, 3))
    with pytest.raises(BadInputError) as err:
        load_dataset("imagefolder", "train", tmp_path / "flat")
    assert_names(err, tmp_path / "flat", "ROOT/train/<class>")
    make_folder_tree(tmp_path / "ok")
    write_image(tmp_path / "ok" / "val" / "green" / "x.png", (0, 255, 0))
    with pytest.raises(BadInputError) as err:
        load_dataset("imagefolder", "test", tmp_path / "ok")
    assert_names(err, tmp_path / "ok" / "val", "green")
    broken = tmp_path / "ok" / "train" / "red" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    train = load_dataset("imagefolder", "train", tmp_path / "ok")
    index = [str(p) for p, _ in train.samples].index(str(broken))
    with pytest.raises(CorruptFileError) as err:
        train[index]
    assert_names(err, broken, "not a readable image")


# ---------------------------------------------------------------------------------------------------------
# Restricted ImageNet


def test_restricted_imagenet_ranges_and_labels(tmp_path):
    ranges = list(RESTRICTED_IMAGENET_RANGES.values())
    assert list(RESTRICTED_IMAGENET_RANGES) == ["dog", "cat", "frog", "turtle", "bird", "primate", "fish",
                                                "crab", "insect"]
    assert ranges[0] == (151, 268) and ranges[-1] == (300, 319)
    # dog at both range ends, cat, frog, insect at its end; synsets 0 and 500 are outside every range
    make_imagenet(tmp_path, "train", {151: 1, 268: 2, 281: 1, 30: 1, 319: 1, 0: 2, 500: 1})
    train = load_dataset("restricted_imagenet", "train", tmp_path, size=32)
    assert train.num_classes == 9 and train.classes[1] == "cat"
    assert sorted(train.targets) == [0, 0, 0, 1, 2, 8]
    image, label = train[0]
    assert image.shape == (3, 32, 32) and float(image.min()) >= 0 and float(image.max()) <= 1
    full, _ = load_dataset("restricted_imagenet", "train", tmp_path)[0]
    assert full.shape == (3, 224, 224)
    augmented = load_dataset("restricted_imagenet", "train", tmp_path, size=16, augment=True)
    assert augmented[0][0].shape == (3, 16, 16)


def test_restricted_imagenet_test_split_and_shared_root(tmp_path):
    make_imagenet(tmp_path / "imagenet", "val", {389: 1, 120: 1})
    test = load_dataset("restricted_imagenet", "test", tmp_path, size=8)  # a data root holding imagenet/
    assert sorted(test.targets) == [6, 7]


def test_restricted_imagenet_needs_all_synsets(tmp_path):
    make_imagenet(tmp_path, "train", {151: 1}, n_classes=999)
    with pytest.raises(BadInputError) as err:
        load_dataset("restricted_imagenet", "train", tmp_path)
    assert_names(err, tmp_path / "train", "999", "1000")
    with pytest.raises(BadInputError) as err:
        load_dataset("restricted_imagenet", "test", tmp_path)
    assert_names(err, tmp_path, "val")


# ---------------------------------------------------------------------------------------------------------
# Constructed datasets: our files and the authors' released folders


def released(tmp_path: Path, n: int = 6) -> tuple[Path, torch.Tensor, torch.Tensor]:
    images = torch.rand(n, 3, 32, 32)
    labels = torch.arange(n) % 10
    folder = tmp_path / "d_robust_CIFAR"
    make_released_folder(folder, images, labels, chunks=3)
    return folder, images, labels


def test_released_folder_round_trip(tmp_path):
    folder, images, labels = released(tmp_path)
    data = load_dataset_file(folder, num_classes=10)
    assert torch.equal(data["images"], images) and torch.equal(data["labels"], labels)


def test_released_folder_missing_file(tmp_path):
    folder, _, _ = released(tmp_path)
    (folder / "CIFAR_lab").unlink()
    with pytest.raises(BadInputError) as err:
        load_dataset_file(folder)
    assert_names(err, folder, "CIFAR_lab missing", "release_datasets")


def test_released_folder_length_and_range(tmp_path):
    folder, _, labels = released(tmp_path)
    torch.save(list(labels[:4].chunk(2)), folder / "CIFAR_lab")
    with pytest.raises(BadInputError) as err:
        load_dataset_file(folder)
    assert_names(err, folder, "one label per image")
    torch.save([labels + 5], folder / "CIFAR_lab")
    with pytest.raises(BadInputError) as err:
        load_dataset_file(folder, num_classes=10)
    assert_names(err, folder, "0..9", "[5, 10]")


@pytest.mark.parametrize("writer", ["torch_save", "pickle_dump"])
@pytest.mark.parametrize("payload", ["shell", "open", "class"])
def test_released_file_needing_code_is_refused_unrun(tmp_path, writer, payload):
    folder, _, _ = released(tmp_path)
    marker = tmp_path / "pwned"
    obj = {"shell": ShellPayload(marker), "open": OpenPayload(marker), "class": TensorHolder()}[payload]
    path = folder / "CIFAR_ims"
    if writer == "torch_save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(CorruptFileError) as err:
        load_dataset_file(folder)
    assert_names(err, path, "refused", "nothing in it was run")
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 40, 0.5])
def test_released_file_truncated(tmp_path, keep):
    folder, _, _ = released(tmp_path)
    path = folder / "CIFAR_ims"
    blob = path.read_bytes()
    path.write_bytes(blob[: int(keep * len(blob)) if isinstance(keep, float) else keep])
    with pytest.raises(CorruptFileError) as err:
        load_dataset_file(folder)
    assert_names(err, path, "truncated")


def test_released_file_of_other_objects(tmp_path):
    folder, _, _ = released(tmp_path)
    torch.save({"images": torch.zeros(2)}, folder / "CIFAR_ims")
    with pytest.raises(CorruptFileError) as err:
        load_dataset_file(folder)
    assert_names(err, folder / "CIFAR_ims", "list of tensor chunks", "dict")


def test_dataset_file_single_files(tmp_path):
    folder, images, labels = released(tmp_path)
    with pytest.raises(BadInputError) as err:
        load_dataset_file(folder / "CIFAR_ims")
    assert_names(err, folder / "CIFAR_ims", "give the folder")
    torch.save({"images": images, "labels": labels}, tmp_path / "data.pt")
    with pytest.raises(CorruptFileError) as err:
        load_dataset_file(tmp_path / "data.pt")
    assert_names(err, tmp_path / "data.pt", "not a safetensors file")
    ours = tmp_path / "D_R.safetensors"
    save_dataset_file(ours, images, labels)
    assert torch.equal(load_dataset_file(ours, num_classes=10)["images"], images)
    with pytest.raises(BadInputError) as err:
        load_dataset_file(ours, num_classes=3)
    assert_names(err, ours, "0..2")
    ours.write_bytes(ours.read_bytes()[:-100])
    with pytest.raises(CorruptFileError) as err:
        load_dataset_file(ours)
    assert_names(err, ours, "truncated")
    with pytest.raises(BadInputError) as err:
        load_dataset_file(tmp_path / "absent")
    assert_names(err, tmp_path / "absent", "no such file")
