"""Datasets and loaders for training: ``digits``, CIFAR-10/100, and any ImageFolder tree.

Every dataset comes as a pair of splits, ``train`` and ``val``, of ``(image (3, H, W), label)``,
with the augmentation and normalisation that suit it:

- ``digits``: scikit-learn's 1,797 hand-written 8x8 digits, upsampled to 32x32 RGB. It ships
  inside scikit-learn, so every machine has real data without a download (the default for
  smoke runs and tests).
- ``cifar10`` / ``cifar100``: torchvision's datasets (downloaded where the network allows), or an
  ImageFolder copy with ``train/`` and ``test/`` (or ``val/``) under the data root.
- ``imagenette``: ten easy ImageNet classes; an ImageFolder copy at ``<root>/imagenette``, or
  torchvision's ``Imagenette`` (downloaded where the network allows);
- a path to an ImageFolder tree with ``train/`` and ``val/`` (or ``test/``).

The data root is ``data_dir``, else the environment variable ``CCOAT_DATA``, else the folder
``shared/data`` beside the checkout when it exists (where this project's machines keep their
offline copies of CIFAR-10 and Imagenette). Bad data fails early
and says what is wrong: a missing dataset names the places searched and how to get the data; a
corrupt image, or one over PIL's decompression-bomb limit, names its file; an empty class
folder, a single class, val classes unknown to train, or a symbolic link that leads back into
the tree are named. Hidden folders and files (``.ipynb_checkpoints``) are no classes and no
images; 16-bit images are scaled to 8 bits by their bit depth.
"""
from __future__ import annotations

import argparse
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets as tvd
from torchvision import transforms as T

from . import checks

DATA_ENV = "CCOAT_DATA"
# This project's machines keep offline data beside the checkout, at ../shared/data.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Per-channel statistics of the training images.
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "digits": ((0.3057,) * 3, (0.3237,) * 3),  # measured on the upsampled train split
}
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
NO_FLIP = {"digits"}  # datasets never mirrored in augmentation: a mirrored digit is another symbol
VAL_SPLIT_NAMES = ("val", "test")  # the held-out split's folder, in order of preference
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# data in the wrong place when found beside the class folders (a class still zipped, say)
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not where we looked; the message lists the places and how to get it."""


@dataclass
class DataInfo:
    """What a model and a results file need to know about the data."""

    name: str  # "digits", "cifar10", "cifar100" or the ImageFolder path
    source: str  # where the images were read from
    num_classes: int
    img_size: int
    classes: list[str]
    mean: tuple
    std: tuple
    n_train: int
    n_val: int


def data_root(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``data_dir`` if given, else ``$CCOAT_DATA``, else ``SHARED_DATA`` if it exists, else None."""
    root = data_dir or os.environ.get(DATA_ENV)
    if root:
        return Path(root).expanduser()
    return SHARED_DATA if SHARED_DATA.is_dir() else None


# ---------------------------------------------------------------------------------------------
# Transforms


def parse_img_size(text: str) -> int:
    """An image side in pixels from the command line (``--img-size N``, ``--img-sizes N ...``
    of ``python -m ccoat.sweep`` and the benchmarks): a positive integer. As an argparse
    ``type``, a bad value is an error naming the option."""
    try:
        side = int(text)
    except ValueError:
        side = 0
    if side < 1 or str(text).strip() != str(side):
        raise argparse.ArgumentTypeError(f"image side must be a positive integer (pixels), "
                                         f"got {text!r}")
    return side


def crop_scale(img_size: int) -> tuple[float, float]:
    """The range of a random-resized crop's area, as a fraction of the image: small outputs
    (<= 64 px) keep at least 35% of it, larger ones 8% (ImageNet's usual range)."""
    return (0.35 if img_size <= 64 else 0.08, 1.0)


def eval_resize(img_size: int) -> int:
    """The shorter side an image is resized to before the evaluation's central ``img_size``
    crop (ImageNet's usual crop fraction, 0.875): 146 px for 128."""
    return int(round(img_size / 0.875))


def build_transforms(img_size: int, mean, std, train: bool, native_size: int | None = None,
                     randaugment: str | None = None, flip: bool = True):
    """Standard augmentation for training, resize + centre crop for evaluation.

    Small images (``native_size`` equal to ``img_size``, as CIFAR at 32 px) use the usual
    padded random crop; larger images use a random-resized crop. ``randaugment`` is a timm
    RandAugment spec such as ``"rand-m9-mstd0.5"``.
    """
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    if not train:
        if native_size == img_size:
            return T.Compose(normalize)
        return T.Compose([T.Resize(eval_resize(img_size)), T.CenterCrop(img_size), *normalize])
    if native_size == img_size:
        ops = [T.RandomCrop(img_size, padding=img_size // 8, padding_mode="reflect")]
    else:
        ops = [T.RandomResizedCrop(img_size, scale=crop_scale(img_size))]
    if flip:
        ops.append(T.RandomHorizontalFlip())
    if randaugment:
        from timm.data import rand_augment_transform

        fill = tuple(int(round(255 * m)) for m in mean)
        ops.append(rand_augment_transform(randaugment, {"translate_const": int(img_size * 0.45),
                                                        "img_mean": fill}))
    return T.Compose([*ops, *normalize])


# ---------------------------------------------------------------------------------------------
# digits: the embedded dataset


def digits_images(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``uint8`` RGB images ``(1797, size, size, 3)`` and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float()[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)  # (N, 3, size, size)
    return x.permute(0, 2, 3, 1).contiguous().numpy(), digits.target.astype(np.int64)


class ArrayImages(Dataset):
    """Images held in memory as ``uint8 (N, H, W, 3)``, served through PIL transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None, classes=None):
        self.images, self.targets, self.transform = images, [int(t) for t in labels], transform
        self.classes = classes or [str(c) for c in sorted(set(self.targets))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i])
        return (self.transform(image) if self.transform else image), self.targets[i]


def digits_split(n_val: int = 297, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, class-balanced train/val split of the 1,797 digits (1,500 train, 297 val)."""
    _, labels = digits_images(8)
    rng = np.random.default_rng(seed)
    val = []
    per_class = n_val // 10
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        val.extend(rng.choice(idx, per_class + (1 if c < n_val % 10 else 0), replace=False))
    val = np.sort(np.array(val))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


# ---------------------------------------------------------------------------------------------
# ImageFolder trees, checked


# 16-bit greys (microscopy, depth) scaled by their bit depth, not clipped: PIL's convert("RGB")
# clips a mid-grey 32768 to white. PIL reads 16-bit PNGs and TIFFs as "I;16" and 16-bit PGMs as
# "I" (32-bit), so an "I" image whose values fit 16 bits is taken as 16-bit.
FULL_SCALE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535}


def read_image(path: str) -> Image.Image:
    """Open an image as 8-bit RGB; a file PIL cannot decode, or one larger than PIL's
    decompression-bomb limit, raises ``ValueError`` naming the file."""
    try:
        with open(path, "rb") as f, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            image = Image.open(f)
            image.load()
        for warning in caught:  # say which file: PIL's bomb warning names only pixel counts
            limit = " (the limit is PIL.Image.MAX_IMAGE_PIXELS)" \
                if warning.category is Image.DecompressionBombWarning else ""
            warnings.warn(f"{path}: {warning.message}{limit}", warning.category, stacklevel=2)
    except Image.DecompressionBombError as error:
        raise ValueError(f"image file {path} is larger than PIL's decompression-bomb limit: "
                         f"{error} Raise PIL.Image.MAX_IMAGE_PIXELS (None: no limit) if the "
                         "file is trusted, or make it smaller") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"corrupt or unreadable image file {path}: {error}") from error
    return _to_rgb8(image, path)


def _to_rgb8(image: Image.Image, path: str) -> Image.Image:
    """``image`` as 8-bit RGB; integer greys of 16 or 32 bits scaled by their bit depth
    (65535 -> 255), float greys ("F") from [0, 1]; other ranges cannot be guessed and raise."""
    if image.mode not in (*FULL_SCALE, "I", "F"):
        return image.convert("RGB")
    pixels = np.asarray(image).astype(np.float64)  # (H, W)
    low, high = float(pixels.min()), float(pixels.max())
    if image.mode == "F":
        full, expected = 1.0, "float pixels in [0, 1]"
    else:
        full = FULL_SCALE.get(image.mode, 65535 if high <= 65535 else 2**31 - 1)
        expected = "non-negative integer pixels"
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low and high <= full):
        raise ValueError(f"image file {path} (mode {image.mode}) has pixels in [{low}, {high}];"
                         f" expected {expected}: convert it to 8 or 16 bits")
    grey = np.round(pixels * (255 / full)).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _class_names(split_dir: Path) -> list[str]:
    """The class folders of a split, sorted: its sub-folders (links to folders included), but not
    hidden ones (``.ipynb_checkpoints``, ``.git``), which hold no class."""
    return sorted(entry.name for entry in os.scandir(split_dir)
                  if entry.is_dir() and not entry.name.startswith("."))


def _image_files(class_dir: Path, seen: dict[str, str]) -> list[str]:
    """The image files under ``class_dir`` at any depth, in torchvision's ImageFolder order
    (folders by path, then files by name), hidden files and folders left out (``._x.jpg`` is
    macOS metadata, not an image).

    Links to folders are followed (a class folder may live elsewhere), but a folder reached a
    second time (``seen``: real path -> the path it was reached by) raises ``ValueError``
    naming the link: a link back into the tree reads its images again (torchvision's
    ImageFolder follows a loop until the path grows too long: 40 copies).
    """
    walked, stack, top = [], [str(class_dir)], next(iter(seen.values()))  # top: the split
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            raise ValueError(_reached_twice(folder, seen[real], real, top))
        seen[real] = folder
        with os.scandir(folder) as entries:
            entries = [entry for entry in entries if not entry.name.startswith(".")]
        stack.extend(entry.path for entry in entries if entry.is_dir())
        files = [entry for entry in entries
                 if not entry.is_dir() and entry.name.lower().endswith(IMG_EXTENSIONS)]
        broken = [entry.path for entry in files if not entry.is_file()]
        if broken:  # found now, not an epoch into training
            raise ValueError(f"{broken[0]} is a broken symbolic link or no regular file; "
                             f"expected an image file")
        walked.append((folder, sorted(entry.path for entry in files)))
    return [path for _, files in sorted(walked) for path in files]


def _reached_twice(folder: str, first: str, real: str, top: str) -> str:
    """The error for a folder reached by two paths below ``top``: names the link that leads back."""
    links = [p for path in (folder, first) for p in (Path(path), *Path(path).parents)
             if p.is_relative_to(top) and p.is_symlink()]
    named = f"the symbolic link {links[0]} -> {os.readlink(links[0])}" if links else "a link"
    return (f"{named} leads back to the folder {real}, already read as {first}: following it "
            f"would read its images again (a loop, or a second copy of a class); expected each "
            f"folder of the tree once. Remove the link, or copy the images it should add")


def _class_folders(split_dir: Path) -> dict[str, int]:
    """Class name -> number of image files, for each class folder of ``split_dir``."""
    seen = {os.path.realpath(split_dir): str(split_dir)}
    return {name: len(_image_files(split_dir / name, seen)) for name in _class_names(split_dir)}


class CheckedImageFolder(tvd.DatasetFolder):
    """``torchvision.datasets.ImageFolder`` whose classes can be given (val uses train's), which
    leaves out hidden folders and files, refuses links that lead back into the tree, reads
    16-bit images by their bit depth, and whose errors name the folder or file at fault."""

    def __init__(self, root, transform=None, class_to_idx: dict[str, int] | None = None):
        self._given_classes = class_to_idx
        super().__init__(str(root), loader=read_image, extensions=IMG_EXTENSIONS,
                         transform=transform, allow_empty=class_to_idx is not None)

    def find_classes(self, directory):
        if self._given_classes is not None:
            classes = sorted(self._given_classes, key=self._given_classes.get)
            return classes, dict(self._given_classes)
        classes = _class_names(Path(directory))
        if not classes:
            raise ValueError(f"expected one sub-folder per class in {directory}, found none")
        return classes, {name: i for i, name in enumerate(classes)}

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None,
                     allow_empty=False):
        """(path, class index) for every image of the class folders that exist, as
        :func:`_image_files` lists them; a class folder without images raises unless
        ``allow_empty``."""
        seen = {os.path.realpath(directory): str(directory)}
        samples = []
        for name in sorted(class_to_idx):
            folder = Path(directory) / name
            files = _image_files(folder, seen) if folder.is_dir() else []
            if not files and not allow_empty:
                raise ValueError(f"class folder {folder} has no images "
                                 f"({', '.join(IMG_EXTENSIONS)})")
            samples.extend((path, class_to_idx[name]) for path in files)
        return samples


def check_image_folder(train_dir: Path, val_dir: Path) -> list[str]:
    """Raise ``ValueError`` for fewer than two classes, an empty class folder, or val classes
    train lacks; return the classes."""
    train_counts, val_counts = _class_folders(train_dir), _class_folders(val_dir)
    for split_dir in (train_dir, val_dir):
        _refuse_stray_files(split_dir)
    if len(train_counts) < 2:
        raise ValueError(f"expected one sub-folder per class (at least two classes) in "
                         f"{train_dir}, found {len(train_counts)}: {list(train_counts)}")
    for split_dir, counts in ((train_dir, train_counts), (val_dir, val_counts)):
        empty = [name for name, n in counts.items() if n == 0]
        if empty:
            raise ValueError(f"class folder(s) with no images ({', '.join(IMG_EXTENSIONS)}): "
                             + ", ".join(str(split_dir / name) for name in empty))
    if not val_counts:
        raise ValueError(f"the val split {val_dir} has no class folders; expected some of "
                         f"{sorted(train_counts)} with images in them")
    unknown = sorted(set(val_counts) - set(train_counts))
    if unknown:
        raise ValueError(f"the val split {val_dir} has classes the train split {train_dir} lacks: "
                         f"{unknown}; expected val classes to be a subset of {sorted(train_counts)}")
    return list(train_counts)


def _refuse_stray_files(split_dir: Path) -> None:
    """Images or archives directly in a split belong to no class: raise ``ValueError`` naming
    them rather than leave them out unsaid (other files, a README say, are no data)."""
    stray = sorted(entry.name for entry in os.scandir(split_dir)
                   if not entry.name.startswith(".") and not entry.is_dir()
                   and entry.name.lower().endswith(IMG_EXTENSIONS + ARCHIVE_EXTENSIONS))
    if stray:
        raise ValueError(f"{split_dir} holds {len(stray)} image or archive file(s) outside any "
                         f"class folder: {', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''}"
                         f"; expected only class folders: move images into "
                         f"{split_dir / '<class>'}, unpack archives there")


def _not_a_tree(path: Path) -> str:
    """What ``path``, expected to hold ``train/`` and ``val/``, is instead (for an error)."""
    if not path.exists():
        return f"{path} (does not exist)"
    if not path.is_dir():
        return f"{path} (a file, not a folder: unpack an archive first)"
    return f"{path} (no train/ folder)" if not (path / "train").is_dir() \
        else f"{path} (no val/ or test/ folder)"


def find_splits(root: Path) -> tuple[Path, Path] | None:
    """``(root/train, root/val or root/test)`` when ``root`` is an ImageFolder tree, else None."""
    train = root / "train"
    if not train.is_dir():
        return None
    for name in VAL_SPLIT_NAMES:
        if (root / name).is_dir():
            return train, root / name
    return None


# ---------------------------------------------------------------------------------------------
# Building the splits


HOW_TO_GET = {
    "cifar10": "on a machine with internet access torchvision downloads it (download=True); "
               "offline, put the python-format archive (cifar-10-batches-py/) or an ImageFolder "
               "copy (train/<class>/*.jpg, test/<class>/*.jpg) under the data root and pass "
               f"--data-dir DIR or set {DATA_ENV}",
    "cifar100": "on a machine with internet access torchvision downloads it (download=True); "
                "offline, put cifar-100-python/ or an ImageFolder copy (train/, test/) under the "
                f"data root and pass --data-dir DIR or set {DATA_ENV}",
}


def _digits(data: str, root: Path | None, download: bool):
    """scikit-learn's digits, upsampled to 32x32 RGB, in the fixed split of :func:`digits_split`."""
    images, labels = digits_images(32)
    train_idx, val_idx = digits_split()
    train = ArrayImages(images[train_idx], labels[train_idx])
    val = ArrayImages(images[val_idx], labels[val_idx])
    return train, val, "sklearn.datasets.load_digits (8x8, upsampled to 32x32 RGB)", train.classes


def _cifar(data: str, root: Path | None, download: bool):
    """CIFAR-10/100 from an ImageFolder copy or torchvision's archive, or a clear error."""
    looked = []
    for candidate in [root, root / data] if root is not None else []:
        looked.append(f"{candidate} (ImageFolder with train/ and test/ or val/)")
        if candidate.is_dir() and find_splits(candidate):
            train, val, source = _image_folder_splits(candidate)
            break
    else:
        cls = tvd.CIFAR10 if data == "cifar10" else tvd.CIFAR100
        tv_root = root if root is not None else Path.home() / ".cache" / "ccoat" / "data"
        looked.append(f"{tv_root / cls.base_folder} (torchvision archive)")
        try:
            train = cls(str(tv_root), train=True, download=download)
            val = cls(str(tv_root), train=False, download=download)
        except (RuntimeError, OSError) as error:  # not found / no network
            raise DatasetNotFoundError(
                f"dataset {data!r} not found; looked in: " + "; ".join(looked)
                + f". How to get it: {HOW_TO_GET[data]}. ({type(error).__name__}: {error})"
            ) from error
        source = str(Path(train.root) / train.base_folder)
    if len(train.classes) != NUM_CLASSES[data]:
        raise ValueError(f"{data} has {NUM_CLASSES[data]} classes, but {source} has "
                         f"{len(train.classes)}")
    return train, val, source, list(train.classes)


def _imagenette(data: str, root: Path | None, download: bool):
    """Imagenette from an ImageFolder copy at ``<root>/imagenette`` or torchvision's download."""
    local = root / "imagenette" if root is not None else None
    if local is not None and local.is_dir() and find_splits(local):
        train, val, source = _image_folder_splits(local)
        return train, val, source, list(train.classes)
    tv_root = root if root is not None else Path.home() / ".cache" / "ccoat" / "data"
    try:
        train = tvd.Imagenette(str(tv_root), "train", "320px", download=download)
        val = tvd.Imagenette(str(tv_root), "val", "320px", download=download)
    except (RuntimeError, OSError) as error:
        raise DatasetNotFoundError(
            f"dataset 'imagenette' not found; looked in: {local} (ImageFolder with train/ "
            f"and val/); {tv_root} (torchvision's Imagenette). How to get it: on a machine "
            "with internet access torchvision downloads it (download=True); offline, put an "
            f"ImageFolder copy at DATA_ROOT/imagenette and pass --data-dir DATA_ROOT or set "
            f"{DATA_ENV}. ({type(error).__name__}: {error})") from error
    return train, val, str(Path(tv_root) / "imagenette2-320"), list(train.wnids)


def _folder(data: str, root: Path | None, download: bool):
    """A path to an ImageFolder tree (absolute, relative, or relative to the data root)."""
    path = Path(data).expanduser()
    tried = [path] + ([root / data] if root is not None and not path.is_absolute() else [])
    for candidate in tried:
        if candidate.is_dir() and find_splits(candidate):
            train, val, source = _image_folder_splits(candidate)
            return train, val, source, list(train.classes)
    raise DatasetNotFoundError(
        f"--data {data!r} is neither 'digits', 'cifar10', 'cifar100', 'imagenette' nor an "
        "ImageFolder tree; "
        "looked for train/ and val/ (or test/) in: " + "; ".join(map(_not_a_tree, tried))
        + ". How to get data: 'digits' needs nothing; for your own images make "
        "DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg"
    )


IMAGENET_STATS = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
# name: (finds the splits -> (train, val, source, classes), native image side (None: any size,
# random-resized crops), per-channel mean and std); any other name is an ImageFolder path
DATASETS = {
    "digits": (_digits, 32, STATS["digits"]),
    "cifar10": (_cifar, 32, STATS["cifar10"]),
    "cifar100": (_cifar, 32, STATS["cifar100"]),
    "imagenette": (_imagenette, None, IMAGENET_STATS),
}


def build_datasets(data: str = "digits", data_dir=None, img_size: int | None = None,
                   randaugment: str | None = None, download: bool = True, augment: bool = True):
    """Return ``(train, val, info)`` for ``data`` (``digits``, ``cifar10``, ``cifar100``, or an
    ImageFolder path). ``augment=False`` gives the train split the evaluation transform."""
    root = data_root(data_dir)
    splits = _build_datasets(data, root, img_size, randaugment, download)
    if not augment:
        train, val, info = splits
        base = train.dataset if isinstance(train, Subset) else train
        base.transform = val.transform
    return splits


def _build_datasets(data, root, img_size, randaugment, download):
    """Find the splits of ``data``, then give them the transforms that suit it: at its native
    side (32 px) the padded random crop, else the random-resized crop (224 px by default)."""
    find, native, (mean, std) = DATASETS.get(data, (_folder, None, IMAGENET_STATS))
    train, val, source, classes = find(data, root, download)
    size = img_size or native or 224
    flip = data not in NO_FLIP
    train.transform = build_transforms(size, mean, std, True, native_size=native,
                                       randaugment=randaugment, flip=flip)
    val.transform = build_transforms(size, mean, std, False, native_size=native, flip=flip)
    name = data if data in DATASETS else str(data)
    return train, val, DataInfo(name, source, len(classes), size, classes, mean, std, len(train),
                                len(val))


def _image_folder_splits(root: Path):
    train_dir, val_dir = find_splits(root)
    classes = check_image_folder(train_dir, val_dir)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    train = CheckedImageFolder(train_dir)
    val = CheckedImageFolder(val_dir, class_to_idx=class_to_idx)
    return train, val, str(root)


def subset(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A fixed random subset of ``n`` items (the whole dataset when ``n`` is None or too big).

    The subset is stratified-free but seeded, so the same ``n`` and ``seed`` pick the same items.
    """
    if n is None or n >= len(dataset):
        return dataset
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, sorted(idx.tolist()))


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int = 0,
                sampler=None, pin_memory: bool = False, generator=None) -> DataLoader:
    """A DataLoader; training drops the last incomplete batch so every step has the same size.

    A training loader without a ``sampler`` shuffles; :func:`ccoat.train.fit` gives it a
    ``DistributedSampler``, which shuffles as a function of ``(seed, epoch)``."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None,
                      sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                      drop_last=train, persistent_workers=False, generator=generator)


# ---------------------------------------------------------------------------------------------
# A whole split on the device


class _MixedSizes(ValueError):
    """The images of a split differ in size."""


def to_uint8_tensor(dataset: Dataset, num_workers: int = 0, batch_size: int = 1000,
                    side: int | None = None):
    """Decode every image of ``dataset`` once into ``uint8 (N, 3, H, W)`` and its labels.

    The dataset's own transform is bypassed: images of one size are kept as they are stored.
    A split whose images differ in size (torchvision's Imagenette: 320 px on the shorter side,
    of many widths) is read again with each image resized to ``side`` on its shorter side and
    cut to its central square, as ``benchmarks/pack_imagenette.py`` packs Imagenette; without
    ``side`` it raises ``ValueError``.
    """
    from torchvision.transforms.functional import pil_to_tensor

    try:
        return _decode(dataset, pil_to_tensor, num_workers, batch_size)
    except _MixedSizes:
        if side is None:
            raise
    square = T.Compose([T.Resize(side), T.CenterCrop(side), T.PILToTensor()])
    return _decode(dataset, square, num_workers, batch_size)


def _decode(dataset: Dataset, transform, num_workers: int, batch_size: int):
    """Every image of ``dataset`` through ``transform``, stacked; ``_MixedSizes`` as soon as
    two sizes are seen (before the whole split is decoded). The loop is left with ``break``, not
    an exception, so the loader's worker processes are shut down at once."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    saved, base.transform = base.transform, transform
    images, labels, sizes = [], [], set()
    try:
        for x, y, batch_sizes in DataLoader(dataset, batch_size=batch_size,
                                            num_workers=num_workers, collate_fn=_stack):
            sizes.update(batch_sizes)
            if len(sizes) > 1:
                break
            images.append(x)
            labels.append(y)
    finally:
        base.transform = saved
    if len(sizes) > 1:
        raise _MixedSizes(f"data_on_device needs images of one size; found {sorted(sizes)}")
    return torch.cat(images), torch.cat(labels)


def _stack(batch):
    """A batch's images stacked (None when their sizes differ), labels, and the sizes found."""
    sizes = {tuple(x.shape) for x, _ in batch}
    images = torch.stack([x for x, _ in batch]) if len(sizes) == 1 else None
    return images, torch.tensor([int(y) for _, y in batch]), sizes


class DeviceLoader:
    """Batches of a split held on the device as ``uint8``, augmented there.

    For small images (CIFAR at 32 px) reading and augmenting on the CPU, not the model, limits
    a GPU's training speed. Here the split is decoded once, kept on the device, and each batch
    is cut out, augmented and normalised on the device, drawn per image: the padded random crop
    and flip of :func:`build_transforms` (``crop_padding``), or, for images stored larger than
    ``img_size``, a random-resized crop (``resized_scale``: the range of the crop's area, as a
    fraction of the image; ``resized_ratio``: of its aspect ratio; bilinear) and flip.
    Evaluation batches of images stored larger than ``img_size`` get :func:`build_transforms`'
    view: resized to :func:`eval_resize` (no resize for images stored at that size) and
    centre-cropped. The order of the images comes from ``sampler``
    (a ``DistributedSampler``, as with a ``DataLoader``), and the augmentation of each epoch
    from a generator seeded by ``(seed, epoch)``, so a resumed run draws what an uninterrupted
    one draws.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean, std,
                 *, train: bool, sampler=None, crop_padding: int = 0, flip: bool = False,
                 seed: int = 0, img_size: int | None = None,
                 resized_scale: tuple[float, float] | None = None,
                 resized_ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.images, self.labels = images, labels.to(images.device)
        self.batch_size, self.train, self.sampler = batch_size, train, sampler
        self.crop_padding, self.flip, self.seed = crop_padding, flip, seed
        self.img_size = img_size or images.shape[-1]
        if self.img_size > min(images.shape[-2:]):
            raise ValueError(f"img_size {self.img_size} is larger than the stored images "
                             f"{tuple(images.shape[-2:])}")
        self.resized_scale, self.resized_ratio = resized_scale, resized_ratio
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=images.device).view(shape) * 255
        self.std = torch.tensor(std, device=images.device).view(shape) * 255

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.images)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _evaluation_view(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`build_transforms`' evaluation view: the shorter side resized to
        :func:`eval_resize` (bilinear, antialiased; nothing to do for images stored at that
        size), then the central ``img_size`` x ``img_size`` pixels."""
        h, w, s = x.shape[-2], x.shape[-1], self.img_size
        side = eval_resize(s)
        if min(h, w) != side:  # as torchvision's Resize(side): the longer side truncated
            h, w = (side, int(side * w / h)) if h <= w else (int(side * h / w), side)
            x = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255)
        top, left = (h - s) // 2, (w - s) // 2
        return x[..., top:top + s, left:left + s]

    def _resized_crop(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random-resized crop of each image to ``img_size``, bilinear."""
        b, s = x.shape[0], self.img_size
        u = torch.rand(b, 3, device=x.device, generator=generator)
        lo, hi = self.resized_scale
        area = lo + (hi - lo) * u[:, 0]
        low, high = (math.log(r) for r in self.resized_ratio)
        ratio = torch.exp(low + (high - low) * u[:, 1])
        cw = (area * ratio).sqrt().clamp(max=1.0)  # crop width and height, fractions of the image
        ch = (area / ratio).sqrt().clamp(max=1.0)
        centre = torch.rand(b, 2, device=x.device, generator=generator)
        cx = (centre[:, 0] * 2 - 1) * (1 - cw)  # in grid_sample's [-1, 1] coordinates
        cy = (centre[:, 1] * 2 - 1) * (1 - ch)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = cw, cx, ch, cy
        grid = F.affine_grid(theta, (b, x.shape[1], s, s), align_corners=False)
        return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.resized_scale is not None:
            x = self._resized_crop(x, generator)
        b, _, h, w = x.shape
        if self.crop_padding:
            p = self.crop_padding
            padded = F.pad(x.float(), (p, p, p, p), mode="reflect")
            dy = torch.randint(0, 2 * p + 1, (b, 1), device=x.device, generator=generator)
            dx = torch.randint(0, 2 * p + 1, (b, 1), device=x.device, generator=generator)
            rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
            cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
            x = padded[torch.arange(b, device=x.device)[:, None, None, None],
                       torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
        if self.flip:
            mirror = torch.rand(b, device=x.device, generator=generator) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        return x

    def __iter__(self):
        order = torch.tensor(list(self.sampler), device=self.images.device) \
            if self.sampler is not None else torch.arange(len(self.images), device=self.images.device)
        generator = None
        if self.train:
            epoch = getattr(self.sampler, "epoch", 0)
            generator = torch.Generator(self.images.device)
            generator.manual_seed(self.seed * 1_000_003 + epoch)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx]
            if self.train:
                x = self._augment(x, generator)
            elif x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
                x = self._evaluation_view(x)
            yield (x.float() - self.mean) / self.std, self.labels[idx]


def device_loader(dataset: Dataset, info: DataInfo, batch_size: int, train: bool, device,
                  sampler=None, augment: bool = True, seed: int = 0,
                  num_workers: int = 0) -> DeviceLoader:
    """A :class:`DeviceLoader` for a split of :func:`build_datasets`. Images stored at
    ``img_size`` (CIFAR, digits) get the padded crop and flip of :func:`build_transforms`;
    images stored larger (a resized pack of Imagenette, say) its random-resized crop and flip
    for training and the centre crop for evaluation. A split of images of many sizes is stored
    as the pack stores Imagenette: shorter side :func:`eval_resize` of ``img_size``, central
    square (see :func:`to_uint8_tensor`)."""
    images, labels = to_uint8_tensor(dataset, num_workers, side=eval_resize(info.img_size))
    stored = tuple(images.shape[-2:])
    if min(stored) < info.img_size:
        raise ValueError(f"data_on_device crops the stored images to img_size; they are "
                         f"{stored}, smaller than img_size {info.img_size}")
    native = stored == (info.img_size, info.img_size)
    padding = info.img_size // 8 if augment and native else 0
    scale = crop_scale(info.img_size) if augment and not native else None
    return DeviceLoader(images.to(device), labels, batch_size, info.mean, info.std, train=train,
                        sampler=sampler, seed=seed, img_size=info.img_size, crop_padding=padding,
                        resized_scale=scale, flip=info.name not in NO_FLIP and augment)


# ---------------------------------------------------------------------------------------------
# Sample photos: real images that need no data folder

def sample_photos(img_size=224, batch_size: int = 2, *, normalize: bool = True) -> torch.Tensor:
    """scikit-learn's two sample photos (``china.jpg`` and ``flower.jpg``, CC BY 2.0), resized
    (bilinear, antialiased) to ``img_size`` (an int or ``(H, W)``): ``(batch_size, 3, H, W)``,
    the two photos in turn. ``normalize``: with ImageNet's mean and std, as a model takes them;
    else pixels in about ``[0, 1]`` (antialiased resizing overshoots that range a little).

    Clustered attention forms as many clusters as its queries fall into distinct buckets, and
    noise images have no structure to cluster; photos give a realistic count.
    """
    from sklearn.datasets import load_sample_images

    if checks.is_integer(img_size):
        img_size = (img_size, img_size)
    if (not isinstance(img_size, (tuple, list)) or len(img_size) != 2
            or any(not checks.is_integer(s) or s < 1 for s in img_size)):
        raise ValueError(f"img_size must be an int >= 1 or a pair (H, W) of them, got {img_size!r}")
    checks.integer("batch_size", batch_size, 1)
    photos = [torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
              for img in load_sample_images().images]  # (3, 427, 640) each
    batch = torch.stack([photos[i % len(photos)] for i in range(batch_size)])
    batch = F.interpolate(batch, size=tuple(img_size), mode="bilinear", antialias=True,
                          align_corners=False)
    if not normalize:
        return batch
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (batch - mean) / std
