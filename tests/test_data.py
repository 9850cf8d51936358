"""ccoat.data: the embedded digits, ImageFolder trees (CIFAR-10's JPEG copy), and bad data."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ccoat import data as cdata

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data"
if not (SHARED_CIFAR / "cifar10" / "train").is_dir():
    SHARED_CIFAR = Path("/work/shared/data")


def _tree(root: Path, splits: dict[str, dict[str, int]]) -> Path:
    """Write a small ImageFolder tree: {split: {class: number of 8x8 PNGs}}."""
    rng = np.random.default_rng(0)
    for split, classes in splits.items():
        for name, n in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_digits_are_real_32px_rgb_with_a_fixed_balanced_split():
    train, val, info = cdata.build_datasets("digits")
    assert (info.num_classes, info.img_size, info.n_train, info.n_val) == (10, 32, 1500, 297)
    image, label = val[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    assert torch.equal(image[0], image[1])  # grey digits copied into three channels
    counts = np.bincount(val.targets, minlength=10)
    assert counts.min() >= 29 and counts.max() <= 30
    assert not set(cdata.digits_split()[0]) & set(cdata.digits_split()[1])


def test_digits_normalisation_matches_the_train_split():
    train, _, _ = cdata.build_datasets("digits", augment=False)
    x = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01


@pytest.mark.skipif(not (SHARED_CIFAR / "cifar10" / "test").is_dir(), reason="no shared CIFAR copy")
def test_cifar10_reads_the_imagefolder_copy_with_test_as_val():
    train, val, info = cdata.build_datasets("cifar10", data_dir=SHARED_CIFAR)
    assert (info.n_train, info.n_val, info.num_classes) == (50000, 10000, 10)
    assert info.classes[0] == "airplane" and info.classes[-1] == "truck"  # CIFAR-10's label order
    assert val.class_to_idx == train.class_to_idx
    image, label = val[len(val) - 1]
    assert image.shape == (3, 32, 32) and label == 9


def test_imagefolder_val_with_fewer_classes_keeps_train_labels(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 2, "b": 2, "c": 2}, "val": {"c": 1}})
    train, val, info = cdata.build_datasets(str(root), img_size=32)
    assert info.num_classes == 3 and val.targets == [2]
    assert val[0][0].shape == (3, 32, 32)


def test_missing_cifar_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(cdata.DatasetNotFoundError) as error:
        cdata.build_datasets("cifar10", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path) in message and "cifar-10-batches-py" in message
    assert "download" in message and "--data-dir" in message


def test_missing_imagefolder_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="train/ and val/") as error:
        cdata.build_datasets(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(error.value)


def test_corrupt_image_names_the_file(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 1, "b": 1}, "val": {"a": 1}})
    bad = root / "train" / "b" / "0.png"
    bad.write_bytes(b"not an image at all")
    train, _, _ = cdata.build_datasets(str(root), img_size=32)
    train[0]  # the good one reads
    with pytest.raises(ValueError, match="corrupt or unreadable image") as error:
        train[1]
    assert str(bad) in str(error.value)


def test_empty_class_folder_is_named(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 1, "b": 0}, "val": {"a": 1}})
    with pytest.raises(ValueError, match="no images") as error:
        cdata.build_datasets(str(root))
    assert str(root / "train" / "b") in str(error.value)


def test_val_classes_missing_from_train_are_named(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 1, "b": 1}, "val": {"a": 1, "zebra": 1}})
    with pytest.raises(ValueError, match="lacks: \\['zebra'\\]"):
        cdata.build_datasets(str(root))


def test_subset_is_fixed_by_seed():
    train, _, _ = cdata.build_datasets("digits")
    a, b = cdata.subset(train, 50, seed=1), cdata.subset(train, 50, seed=1)
    assert a.indices == b.indices and len(a) == 50
    assert cdata.subset(train, None) is train


def test_a_training_loader_shuffles_unless_a_sampler_orders_it():
    data = torch.utils.data.TensorDataset(torch.arange(64))

    def order(loader):
        return torch.cat([batch for (batch,) in loader]).tolist()

    torch.manual_seed(0)
    shuffled = order(cdata.make_loader(data, 8, train=True))
    assert sorted(shuffled) == list(range(64)) and shuffled != list(range(64))
    assert order(cdata.make_loader(data, 8, train=False)) == list(range(64))
    sampler = torch.utils.data.SequentialSampler(data)  # the sampler decides: no shuffle on top
    assert order(cdata.make_loader(data, 8, train=True, sampler=sampler)) == list(range(64))
    assert len(cdata.make_loader(data, 24, train=True)) == 2  # the incomplete batch is dropped


@pytest.mark.skipif(not (SHARED_CIFAR / "imagenette" / "val").is_dir(),
                    reason=f"no offline Imagenette copy under {SHARED_CIFAR} (ImageFolder with train/ and val/)")
def test_imagenette_reads_the_imagefolder_copy_under_the_data_root():
    train, val, info = cdata.build_datasets("imagenette", data_dir=SHARED_CIFAR, img_size=64)
    assert (info.n_train, info.n_val, info.num_classes) == (9469, 3925, 10)
    assert info.classes[0] == "n01440764"  # tench: the folders are ImageNet wnids, sorted
    image, label = val[0]
    assert image.shape == (3, 64, 64) and label == 0


def test_missing_imagenette_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(cdata.DatasetNotFoundError) as error:
        cdata.build_datasets("imagenette", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "imagenette") in message and "download" in message and "CCOAT_DATA" in message


def test_data_root_prefers_argument_then_environment_then_shared_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(cdata.DATA_ENV, str(tmp_path / "env"))
    assert cdata.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert cdata.data_root() == tmp_path / "env"
    monkeypatch.delenv(cdata.DATA_ENV)
    monkeypatch.setattr(cdata, "SHARED_DATA", tmp_path)
    assert cdata.data_root() == tmp_path
    monkeypatch.setattr(cdata, "SHARED_DATA", tmp_path / "absent")
    assert cdata.data_root() is None


def _grey16(path: Path, values) -> Path:
    """A 16-bit grey PNG (PIL mode I;16), one column per value, four rows."""
    Image.fromarray(np.tile(np.asarray(values, np.uint16), (4, 1))).save(path)
    return path


def test_a_16_bit_grey_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 1, "b": 1}, "val": {"a": 1}})
    grey = _grey16(root / "train" / "a" / "0.png", [32768] * 8)
    assert Image.open(grey).mode in ("I;16", "I")  # Pillow < 10 opens a 16-bit PNG as "I"
    train, _, _ = cdata.build_datasets(str(root), augment=False)
    assert np.asarray(train.loader(str(grey))).mean() == 128  # 32768 / 257 = 127.5; PIL: 255
    ramp = np.asarray(train.loader(str(_grey16(tmp_path / "ramp.png", [0, 257, 65535]))))
    assert ramp[0].tolist() == [[0, 0, 0], [1, 1, 1], [255, 255, 255]]


def test_a_16_bit_pgm_read_as_32_bit_and_a_float_image_are_scaled_too(tmp_path):
    pgm = tmp_path / "grey.pgm"  # PIL reads a 16-bit PGM as mode I (32-bit integers)
    pgm.write_bytes(b"P5\n2 1\n65535\n" + np.array([32768, 65535], ">u2").tobytes())
    assert Image.open(pgm).mode == "I"
    assert np.asarray(cdata.read_image(str(pgm)))[0, :, 0].tolist() == [128, 255]
    unit = tmp_path / "unit.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(unit)
    assert np.asarray(cdata.read_image(str(unit)))[0, :, 0].tolist() == [0, 128, 255]
    kelvin = tmp_path / "kelvin.tif"  # a float image's scale cannot be guessed beyond [0, 1]
    Image.fromarray(np.array([[290.0, 310.5]], np.float32)).save(kelvin)
    with pytest.raises(ValueError, match=r"pixels in \[290.0, 310.5\]; expected float pixels "
                                         r"in \[0, 1\]") as error:
        cdata.read_image(str(kelvin))
    assert str(kelvin) in str(error.value)


def test_8_bit_images_read_as_pil_converts_them(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    for mode, pixels in (("RGBA", rgba), ("L", rgba[..., 0]), ("RGB", rgba[..., :3])):
        path = tmp_path / f"{mode}.png"
        Image.fromarray(pixels, mode).save(path)
        expected = np.asarray(Image.open(path).convert("RGB"))
        assert np.array_equal(np.asarray(cdata.read_image(str(path))), expected)


def test_a_symlink_loop_in_a_class_folder_is_refused_naming_the_link(tmp_path):
    root = _tree(tmp_path, {"train": {"cat": 40, "dog": 40}, "val": {"cat": 1}})
    link = root / "train" / "cat" / "loop"
    link.symlink_to("..")  # ImageFolder followed it 40 levels deep: 3,280 images, 98.8% cats
    with pytest.raises(ValueError, match="symbolic link .* leads back") as error:
        cdata.build_datasets(str(root))
    assert f"{link} -> .." in str(error.value)
    with pytest.raises(ValueError, match="leads back"):
        cdata.CheckedImageFolder(root / "train")


def test_a_second_link_to_a_class_is_refused_and_a_class_linked_from_outside_is_read(tmp_path):
    outside = _tree(tmp_path / "elsewhere", {"cats": {"c": 3}}) / "cats" / "c"
    root = _tree(tmp_path / "data", {"train": {"dog": 2}, "val": {"dog": 1}})
    (root / "train" / "cat").symlink_to(outside)  # a class kept elsewhere: a usual layout
    train, _, info = cdata.build_datasets(str(root))
    assert info.classes == ["cat", "dog"] and train.targets == [0, 0, 0, 1, 1]
    (root / "train" / "kitten").symlink_to(root / "train" / "cat")
    with pytest.raises(ValueError, match="kitten -> .* leads back"):
        cdata.build_datasets(str(root))


def test_a_one_class_dataset_is_refused_naming_the_folder(tmp_path):
    root = _tree(tmp_path, {"train": {"cat": 2}, "val": {"cat": 1}})
    with pytest.raises(ValueError, match="at least two classes") as error:
        cdata.build_datasets(str(root))
    assert f"{root / 'train'}, found 1: ['cat']" in str(error.value)


def test_hidden_folders_and_files_are_no_classes_and_no_images(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 2, "b": 1, ".ipynb_checkpoints": 1},
                            "val": {"a": 1, ".ipynb_checkpoints": 1}})
    (root / "train" / "a" / "._0.png").write_bytes(b"macOS metadata, not an image")
    (root / "train" / "b" / ".cache").mkdir()
    (root / "train" / "b" / ".cache" / "0.png").write_bytes(b"")
    train, val, info = cdata.build_datasets(str(root))
    assert info.classes == ["a", "b"] and (info.n_train, info.n_val) == (3, 1)
    assert not any("/." in path for path, _ in train.samples + val.samples)


def test_imagefolder_samples_are_torchvisions_on_a_nested_tree(tmp_path):
    from torchvision.datasets import ImageFolder

    root = _tree(tmp_path, {"train": {"b": 2, "a": 1, "a/z": 2, "a/y/x": 1, "b/10": 1}})
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    checked, reference = cdata.CheckedImageFolder(root / "train"), ImageFolder(root / "train")
    assert checked.samples == reference.samples and len(checked) == 7
    assert checked.classes == reference.classes == ["a", "b"]


def test_a_decompression_bomb_names_the_file_and_the_option(tmp_path, monkeypatch):
    root = _tree(tmp_path, {"train": {"a": 1, "b": 1}, "val": {"a": 1}})
    train, _, _ = cdata.build_datasets(str(root))
    path = train.samples[0][0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30)  # 64 pixels: over twice the limit
    with pytest.raises(ValueError, match="decompression-bomb limit") as error:
        train[0]
    assert path in str(error.value) and "PIL.Image.MAX_IMAGE_PIXELS" in str(error.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # over the limit, under twice: a warning
    with pytest.warns(Image.DecompressionBombWarning, match="MAX_IMAGE_PIXELS") as caught:
        train[0]
    assert path in str(caught[0].message)


def test_a_val_split_without_class_folders_is_refused(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 1, "b": 1}, "val": {".ipynb_checkpoints": 1}})
    with pytest.raises(ValueError, match="has no class folders; expected some of") as error:
        cdata.build_datasets(str(root))  # was accepted: a run scored on no images
    assert str(root / "val") in str(error.value)


@pytest.mark.parametrize("stray", ["cat.png", "cat.zip"])
def test_images_or_archives_outside_the_class_folders_are_named(tmp_path, stray):
    root = _tree(tmp_path, {"train": {"dog": 1, "bird": 1}, "val": {"dog": 1}})
    (root / "train" / stray).write_bytes(b"left out unsaid before")
    (root / "train" / "README.txt").write_text("no data: still allowed")
    with pytest.raises(ValueError, match=f"outside any class folder: {stray}") as error:
        cdata.build_datasets(str(root))
    assert str(root / "train") in str(error.value)


def test_a_broken_link_to_an_image_is_named_before_training(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 1, "b": 1}, "val": {"a": 1}})
    (root / "train" / "a" / "gone.png").symlink_to(tmp_path / "moved.png")
    with pytest.raises(ValueError, match="gone.png is a broken symbolic link"):
        cdata.build_datasets(str(root))


def test_a_data_path_that_is_a_file_says_so(tmp_path):
    archive = tmp_path / "images.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match="a file, not a folder: unpack"):
        cdata.build_datasets(str(archive))
    with pytest.raises(FileNotFoundError, match="nowhere \\(does not exist\\)"):
        cdata.build_datasets(str(tmp_path / "nowhere"))


def test_an_image_side_from_the_command_line_is_a_positive_integer_named_in_the_error():
    import argparse

    assert cdata.parse_img_size("224") == 224
    for bad in ("0", "-32", "22.5", "224x224", "abc", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="image side must be a positive "
                                                             "integer"):
            cdata.parse_img_size(bad)
    parser = argparse.ArgumentParser()
    parser.add_argument("--img-size", type=cdata.parse_img_size)
    with pytest.raises(SystemExit):
        parser.parse_args(["--img-size", "big"])


def test_each_named_dataset_has_its_native_side_and_statistics_and_a_path_is_a_folder(tmp_path):
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    assert cdata.DATASETS["imagenette"][1:] == (None, (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    assert cdata.DATASETS["cifar10"][1:] == (32, cdata.STATS["cifar10"])
    _, val, info = cdata.build_datasets("digits", img_size=48)
    assert (info.name, info.img_size, info.num_classes) == ("digits", 48, 10)
    assert val[0][0].shape == (3, 48, 48)
