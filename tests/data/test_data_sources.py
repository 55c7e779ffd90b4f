"""Each source on small files written in its exact real format; each bad input a one-line error."""

import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
from helpers import cifar_batch, cifar_folder, image_folder, py2_pickle
from PIL import Image

from alexnet.data import open_dataset
from alexnet.data.cifar import SafeUnpickler, load_pickle
from alexnet.data.digits import split_indices
from alexnet.errors import AlexNetError


def _one_line_error(spec, *fragments):
    with pytest.raises(AlexNetError) as info:
        open_dataset(spec)
    message = str(info.value)
    assert "\n" not in message
    for f in fragments:
        assert f in message, message
    return message


# -- image folders ------------------------------------------------------------------------------

def _image(path, value, size=(12, 10), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 7)).save(path, format=fmt)


def _imagenet_layout(root):
    for split, n in (("train", 3), ("val", 2)):
        for c, cls in enumerate(["n02", "n01", "n03"]):
            for i in range(n):
                ext = ".JPEG" if i % 2 == 0 else ".png"
                _image(root / split / cls / f"{cls}_{i}{ext}", 40 * c + i)
    (root / "train" / "n01" / "notes.txt").write_text("not an image: ignored")


def test_image_folder_in_imagenet_layout(tmp_path):
    _imagenet_layout(tmp_path)
    d = open_dataset(tmp_path)
    assert d.name == "folder" and d.classes == ["n01", "n02", "n03"] and d.stats is None
    train = d.splits["train"]
    assert set(d.splits) == {"train", "val"} and len(train) == 9 and len(d.splits["val"]) == 6
    assert not train.in_memory and train.classes == d.classes
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert train.paths[0].endswith("train/n01/n01_0.JPEG") and not any(p.endswith(".txt") for p in train.paths)
    image = train.load(3)  # n02_0.JPEG, value 0
    assert image.shape == (10, 12, 3) and image.dtype == np.uint8 and abs(int(image[5, 5, 1]) - 255) < 4
    loader = pickle.loads(pickle.dumps(train.loader))  # worker processes receive it pickled
    np.testing.assert_array_equal(loader(4), train.load(4))


def test_image_folder_errors(tmp_path):
    _one_line_error(tmp_path / "missing", "missing: no such folder")
    _one_line_error("fashion-mnst", "fashion-mnst: no such folder (did you mean 'fashion-mnist'?")  # a named source mistyped
    (tmp_path / "f.txt").write_text("x")
    _one_line_error(tmp_path / "f.txt", "f.txt: a file")
    _one_line_error(tmp_path, "not a data set", "f.txt")

    root = tmp_path / "set"
    _imagenet_layout(root)
    (root / "train" / "n04").mkdir()
    _one_line_error(root, "n04: empty class folder")
    (root / "train" / "n04" / "readme.md").write_text("x")
    _one_line_error(root, "n04: class folder without images", "readme.md")
    (root / "train" / "n04" / "readme.md").unlink()
    (root / "train" / "n04").rmdir()
    _image(root / "val" / "n09" / "a.png", 1)
    _one_line_error(root, "val/n09: class 'n09' is not one of the 3 classes in")
    _image(root / "val" / "loose.png", 1)
    _one_line_error(root, "has both class folders", "loose.png")


def _flat_val(root):
    """train/ in class layout; val/ flat, as ImageNet's validation archive unpacks."""
    for c, cls in enumerate(["n01", "n02"]):
        _image(root / "train" / cls / f"{cls}_0.JPEG", 10 + c, fmt="JPEG")
    for i in range(1, 4):
        _image(root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG", 100 + i, fmt="JPEG")


def test_flat_val_with_loc_val_solution_csv(tmp_path):
    root = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"  # Kaggle's layout: the csv is three folders up
    _flat_val(root)
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\n"
                   "ILSVRC2012_val_00000002,n01 10 20 30 40 n01 1 2 3 4\n"
                   "ILSVRC2012_val_00000001,n02 10 20 30 40\n"
                   "ILSVRC2012_val_00000003,n02 5 5 9 9\n")
    _image(root / "test" / "ILSVRC2012_test_00000001.JPEG", 5)  # ImageNet's unlabelled test set
    d = open_dataset(root)
    assert set(d.splits) == {"train", "val"}  # the flat, unlabelled test/ is left out
    val = d.splits["val"]
    assert [p.rsplit("/", 1)[1] for p in val.paths] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3)]
    np.testing.assert_array_equal(val.labels, [1, 0, 1])
    assert val.classes == d.classes == ["n01", "n02"]

    csv.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n02 1 1 2 2\n"
                   "ILSVRC2012_val_00000003,n02 1 1 2 2\n")
    _one_line_error(root, "LOC_val_solution.csv: no label for ILSVRC2012_val_00000002", "1 of 3")
    csv.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n02 1 1 2 2\n"
                   "ILSVRC2012_val_00000002,n07 1 1 2 2\nILSVRC2012_val_00000003,n02 1 1 2 2\n")
    _one_line_error(root, "ILSVRC2012_val_00000002.JPEG as 'n07', which is not one of the 2 classes")
    csv.unlink()
    _one_line_error(root, "flat folder of images but no label file")


def test_flat_val_with_devkit_ground_truth(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "imagenet"
    _flat_val(root)
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    # meta.mat as in the devkit: ILSVRC2012_IDs are not in sorted WNID order, and non-leaf synsets follow
    synsets = np.zeros((3, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    for row, (i, wnid, words, children) in enumerate([(1, "n02", "kit fox", 0), (2, "n01", "tench", 0),
                                                      (3, "n00", "entity", 2)]):
        synsets[row, 0] = (np.array([[i]]), wnid, words, np.array([[children]]))
    savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n1\n")
    val = open_dataset(root).splits["val"]
    np.testing.assert_array_equal(val.labels, [0, 1, 1])  # ids 2, 1, 1 → n01, n02, n02 in sorted class order

    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n")
    _one_line_error(root, "ILSVRC2012_validation_ground_truth.txt: 2 labels but 3 images")
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n3\n")
    _one_line_error(root, "ILSVRC2012_ID 3 is not a leaf synset")
    (data / "meta.mat").unlink()
    _one_line_error(root, "meta.mat: missing")


def test_a_symlink_loop_is_named_not_followed(tmp_path):
    root = image_folder(tmp_path / "F")
    os.symlink("..", root / "train" / "cat" / "loop")
    with pytest.raises(AlexNetError, match=r"cat/loop: a symbolic link loop"):
        open_dataset(root)


def test_a_line_break_in_a_file_name_is_refused(tmp_path):
    root = image_folder(tmp_path / "F")
    Image.new("RGB", (40, 30)).save(root / "train" / "dog" / "two\nlines.jpg")
    with pytest.raises(AlexNetError, match="a name with a line break"):
        open_dataset(root)


# -- CIFAR-10 -----------------------------------------------------------------------------------

def test_cifar10_python_batches(tmp_path):
    batches = cifar_folder(tmp_path / "cifar-10-batches-py", np.random.default_rng(0))
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_2").read_bytes()
    reference = pickle.loads(raw, encoding="bytes")  # the writer produces a pickle numpy itself reads the same
    np.testing.assert_array_equal(reference[b"data"], batches["data_batch_2"][b"data"])

    d = open_dataset(tmp_path)  # the folder holding cifar-10-batches-py is accepted too
    assert d.name == "cifar10" and d.classes[0] == "airplane" and d.classes[9] == "truck"
    train, test = d.splits["train"], d.splits["test"]
    assert train.images.shape == (20, 32, 32, 3) and test.images.shape == (4, 32, 32, 3) and train.in_memory
    first = batches["data_batch_1"][b"data"][0]
    np.testing.assert_array_equal(train.images[0, :, :, 0], first[:1024].reshape(32, 32))  # red plane
    np.testing.assert_array_equal(train.images[0, :, :, 2], first[2048:].reshape(32, 32))  # blue plane
    np.testing.assert_array_equal(train.labels[4:8], batches["data_batch_2"][b"labels"])


def test_cifar10_python3_protocol2_pickle(tmp_path):
    batch = cifar_batch(np.random.default_rng(1), 3, b"test batch")
    (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=2))  # bytes via _codecs.encode, numpy._core
    loaded = load_pickle(tmp_path / "b")
    np.testing.assert_array_equal(loaded["data"], batch[b"data"])
    assert loaded["labels"] == batch[b"labels"] and loaded["filenames"][1] == b"img_1.png"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=2)
    assert b"system" in evil
    (tmp_path / "data_batch_1").write_bytes(evil)
    with pytest.raises(AlexNetError, match=r"data_batch_1: refused: refuses to load (posix|os)\.system"):
        load_pickle(tmp_path / "data_batch_1")
    assert not marker.exists()
    (tmp_path / "eval").write_bytes(b"\x80\x02cbuiltins\neval\nX\x06\x00\x00\x001+1==2\x85R.")
    with pytest.raises(AlexNetError, match="refuses to load builtins.eval"):
        load_pickle(tmp_path / "eval")


def test_cifar10_bad_files(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    batches = cifar_folder(root, np.random.default_rng(2))
    good = (root / "data_batch_3").read_bytes()
    (root / "data_batch_3").write_bytes(good[: len(good) // 2])
    _one_line_error(root, "data_batch_3: truncated or not a CIFAR pickle")
    wrong = {**batches["data_batch_3"], b"data": np.zeros((4, 3071), np.uint8)}
    (root / "data_batch_3").write_bytes(py2_pickle(wrong))
    _one_line_error(root, "data_batch_3: 'data' should be uint8 [N, 3072]", "(4, 3071)")
    wrong = {**batches["data_batch_3"], b"labels": [1, 2, 3]}
    (root / "data_batch_3").write_bytes(py2_pickle(wrong))
    _one_line_error(root, "data_batch_3: 4 images but 3 labels")
    (root / "data_batch_3").unlink()
    _one_line_error(root, "not a complete cifar-10-batches-py folder (missing data_batch_3)")


def test_cifar_batches_with_numpy_integer_labels_load_and_code_is_still_refused():
    batch = {b"labels": [np.int64(3), np.int32(7)], b"data": np.zeros((2, 3072), np.uint8)}
    for protocol in (2, 4):
        out = SafeUnpickler(io.BytesIO(pickle.dumps(batch, protocol=protocol)), encoding="bytes").load()
        assert out[b"labels"] == [3, 7] and all(type(v) is int for v in out[b"labels"])
    evil = pickle.dumps({b"labels": [os.system]}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refuses to load"):
        SafeUnpickler(io.BytesIO(evil), encoding="bytes").load()


def test_a_cifar_pickle_nested_100k_deep_is_one_line(tmp_path):
    n = 100_000
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02}" + b"U\x06labels" + b"]" * n + b"a" * (n - 1) + b"s.")
    with pytest.raises(AlexNetError, match="nested too deep"):
        load_pickle(path)


# -- MNIST / Fashion-MNIST IDX ------------------------------------------------------------------

def _idx(array, declared=None):
    """An IDX file of ``array``, its header declaring the shape ``declared`` where given, else the array's."""
    shape = declared or array.shape
    return struct.pack(">BBBB", 0, 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + array.tobytes()


def _idx_folder(root, gz, rng):
    root.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        arrays[prefix] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx(array)
            name = f"{prefix}-{kind}-ubyte"
            (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


def test_write_idx_writes_the_format_byte_for_byte(tmp_path):
    from alexnet.data.idx import write_idx

    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a-idx3-ubyte", images)
    write_idx(tmp_path / "a-idx3-ubyte.gz", images)
    assert (tmp_path / "a-idx3-ubyte").read_bytes() == _idx(images) == gzip.decompress((tmp_path / "a-idx3-ubyte.gz").read_bytes())


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    arrays = _idx_folder(tmp_path / "mnist", gz, np.random.default_rng(3))
    d = open_dataset(tmp_path / "mnist")
    assert d.name == "idx" and d.classes == [str(i) for i in range(10)] and set(d.splits) == {"train", "test"}
    assert d.splits["train"].images.shape == (5, 28, 28, 1) and d.splits["test"].images.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(d.splits["train"].images[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(d.splits["test"].labels, arrays["t10k"][1])


def test_fashion_mnist_in_torchvision_raw_folder(tmp_path):
    _idx_folder(tmp_path / "FashionMNIST" / "raw", True, np.random.default_rng(4))
    d = open_dataset(tmp_path / "FashionMNIST")
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"


@pytest.mark.parametrize("layout", [(), ("raw",), ("FashionMNIST", "raw")])
def test_fashion_mnist_by_name_from_the_folder_the_environment_names(tmp_path, monkeypatch, layout):
    arrays = _idx_folder(tmp_path.joinpath("fm", *layout), True, np.random.default_rng(6))
    monkeypatch.setenv("ALEXNET_FASHION_MNIST", str(tmp_path / "fm"))
    d = open_dataset("fashion-mnist")
    assert d.name == "fashion-mnist" and d.classes[0] == "T-shirt/top" and set(d.splits) == {"train", "test"}
    np.testing.assert_array_equal(d.splits["train"].images[..., 0], arrays["train"][0])


def test_fashion_mnist_absent_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("ALEXNET_FASHION_MNIST", raising=False)
    monkeypatch.setattr("alexnet.data.idx.FASHION_MNIST_FOLDERS", (str(tmp_path / "none"), str(tmp_path / "cache")))
    _one_line_error("fashion-mnist", "not found in", str(tmp_path / "none"), "apt-get install dataset-fashion-mnist",
                    "ALEXNET_FASHION_MNIST")
    monkeypatch.setenv("ALEXNET_FASHION_MNIST", str(tmp_path))
    _one_line_error("fashion-mnist", f"{tmp_path} ($ALEXNET_FASHION_MNIST): no Fashion-MNIST IDX files")


def test_idx_bad_files(tmp_path):
    root = tmp_path / "mnist"
    arrays = _idx_folder(root, False, np.random.default_rng(5))
    (root / "train-images-idx3-ubyte").write_bytes(_idx(arrays["train"][0])[:-10])
    _one_line_error(root, "train-images-idx3-ubyte: wrong size: 3,910 bytes of data, the header's 5×28×28 needs 3,920")
    (root / "train-images-idx3-ubyte").write_bytes(_idx(arrays["train"][0][:4]))
    _one_line_error(root, "train-labels-idx1-ubyte: 5 labels for the 4 images")
    (root / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04 a zip, not IDX")
    _one_line_error(root, "train-images-idx3-ubyte: not an IDX file")
    (root / "train-images-idx3-ubyte").write_bytes(gzip.compress(_idx(arrays["train"][0]))[:200])
    _one_line_error(root, "train-images-idx3-ubyte: cannot read")
    (root / "train-images-idx3-ubyte").write_bytes(_idx(arrays["train"][0]))
    (root / "train-labels-idx1-ubyte").unlink()
    _one_line_error(root, "no train-labels-idx1-ubyte[.gz] file for the train split")


def test_a_raw_and_a_gz_file_of_one_split_must_agree(tmp_path):
    """Issue 25, item 8: a raw labels file beside a .gz of other labels was taken silently (every test label 0).
    torchvision's raw/ keeps both copies of the same data: that is one file."""
    root = tmp_path / "fashion"
    arrays = _idx_folder(root, False, np.random.default_rng(6))
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(arrays["t10k"][1])))
    np.testing.assert_array_equal(open_dataset(root).splits["test"].labels, arrays["t10k"][1])
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros(3, np.uint8))))
    _one_line_error(root, "t10k-labels-idx1-ubyte and t10k-labels-idx1-ubyte.gz: two test labels files with different "
                          "contents; remove the one that is not the data set")


def test_idx_gzip_bomb_and_labels_outside_the_classes(tmp_path):
    root = tmp_path / "mnist"
    root.mkdir()
    labels = np.arange(3, dtype=np.uint8)
    (root / "train-labels-idx1-ubyte").write_bytes(_idx(labels))
    bomb = _idx(np.zeros((3000, 28, 28), np.uint8), declared=(3, 28, 28))  # 2.4 MB inflated, 3 images declared
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bomb))
    with pytest.raises(AlexNetError, match=r"wrong size: more data than the header's 3×28×28 needs 2,352"):
        open_dataset(root)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros((3, 28, 28), np.uint8))))
    (root / "train-labels-idx1-ubyte").write_bytes(_idx(np.array([1, 200, 4], np.uint8)))
    with pytest.raises(AlexNetError, match="label 200 at index 1 is outside 0–9"):
        open_dataset(root)


# -- digits -------------------------------------------------------------------------------------

def test_digits_fixed_stratified_split():
    d = open_dataset("digits")
    assert d.name == "digits" and d.classes == [str(i) for i in range(10)]
    counts = {k: len(v) for k, v in d.splits.items()}
    assert counts == {"train": 1259, "val": 179, "test": 359}  # docs/DATA.md
    train = d.splits["train"]
    assert train.images.shape == (1259, 8, 8, 1) and train.images.dtype == np.uint8 and train.images.max() == 255
    from sklearn.datasets import load_digits

    raw = load_digits()
    parts = split_indices(raw.target)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(1797))  # a partition
    np.testing.assert_array_equal(parts["test"][:5], [3, 7, 13, 19, 36])  # the split is fixed
    for name, idx in parts.items():
        np.testing.assert_array_equal(d.splits[name].labels, raw.target[idx])
        assert len(np.unique(raw.target[idx])) == 10  # stratified: every digit in every split
    np.testing.assert_array_equal(train.images[0, ..., 0], np.rint(raw.images[parts["train"][0]] * 255 / 16))


def test_digits_read_without_scikit_learn_equal_load_digits(monkeypatch):
    from sklearn.datasets import load_digits

    from alexnet.data import digits

    raw = load_digits()
    pixels, labels = digits.read_digits()  # the csv.gz where scikit-learn keeps it
    np.testing.assert_array_equal(pixels, raw.images)
    np.testing.assert_array_equal(labels, raw.target)
    assert labels.dtype == np.int64 and pixels.shape == (1797, 8, 8)
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)  # not found there: load_digits itself
    pixels, labels = digits.read_digits()
    np.testing.assert_array_equal(pixels, raw.images)
    np.testing.assert_array_equal(labels, raw.target)
