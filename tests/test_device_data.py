"""ccoat.data.DeviceLoader: a split held as uint8 on the device serves what the CPU path serves."""
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DistributedSampler

from ccoat import data as cdata


@pytest.fixture(scope="module")
def digits():
    train, val, info = cdata.build_datasets("digits")
    return train, val, info


def test_uint8_copy_holds_the_stored_images_and_labels(digits):
    _, val, info = digits
    images, labels = cdata.to_uint8_tensor(val)
    assert images.dtype == torch.uint8 and images.shape == (info.n_val, 3, 32, 32)
    assert labels.tolist() == val.targets
    # the split's own transform is restored afterwards
    assert isinstance(val[0][0], torch.Tensor)


def test_unaugmented_batches_equal_the_cpu_evaluation_transform(digits):
    _, val, info = digits
    loader = cdata.device_loader(val, info, 50, train=False, device="cpu")
    images, labels = next(iter(loader))
    expected = torch.stack([val[i][0] for i in range(50)])
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    assert labels.tolist() == val.targets[:50]
    assert len(loader) == -(-info.n_val // 50)  # evaluation keeps the last, smaller batch


def test_each_augmented_image_is_a_crop_of_the_reflect_padded_image():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    loader = cdata.DeviceLoader(images, torch.arange(16), 16, (0, 0, 0), (1 / 255,) * 3,
                                train=True, crop_padding=2, flip=True)
    out, labels = next(iter(loader))
    padded = F.pad(images.float(), (2, 2, 2, 2), mode="reflect")
    for b in range(16):
        crops = [padded[b, :, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
        crops += [c.flip(2) for c in crops]
        assert any(torch.equal(out[b], c) for c in crops), f"image {b} is no crop of its padding"
    assert labels.tolist() == list(range(16))


def test_augmentation_depends_on_seed_and_epoch_only():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    sampler = DistributedSampler(range(64), num_replicas=1, rank=0, shuffle=True, seed=3)

    def epoch_batches(epoch, seed=0):
        sampler.set_epoch(epoch)
        loader = cdata.DeviceLoader(images, torch.arange(64), 16, (0, 0, 0), (1, 1, 1), train=True,
                                    sampler=sampler, crop_padding=2, flip=True, seed=seed)
        return torch.cat([x for x, _ in loader])

    assert torch.equal(epoch_batches(1), epoch_batches(1))
    assert not torch.equal(epoch_batches(1), epoch_batches(2))
    assert not torch.equal(epoch_batches(1), epoch_batches(1, seed=1))


def test_images_of_different_sizes_are_refused():
    class Mixed(torch.utils.data.Dataset):
        transform = None

        def __len__(self):
            return 2

        def __getitem__(self, i):
            from PIL import Image

            return self.transform(Image.new("RGB", (8 + i, 8))), 0

    with pytest.raises(ValueError, match="one size"):
        cdata.to_uint8_tensor(Mixed())


def test_device_loader_refuses_images_smaller_than_img_size(digits):
    train, _, info = digits
    resized = cdata.DataInfo(**{**info.__dict__, "img_size": 64})
    with pytest.raises(ValueError, match=r"\(32, 32\), smaller than img_size 64"):
        cdata.device_loader(train, resized, 16, train=True, device="cpu")


def test_images_stored_larger_are_centre_cropped_as_the_cpu_evaluation_transform(digits):
    # stored at round(28 / 0.875) = 32 px, the CPU transform's resize is the identity
    _, val, info = digits
    small = cdata.DataInfo(**{**info.__dict__, "img_size": 28})
    loader = cdata.device_loader(val, small, 50, train=False, device="cpu")
    images, _ = next(iter(loader))
    transform = cdata.build_transforms(28, info.mean, info.std, train=False)
    expected = torch.stack([transform(Image.fromarray(val.images[i])) for i in range(50)])
    assert images.shape == (50, 3, 28, 28)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)


def test_a_resized_crop_of_the_whole_image_at_its_size_is_the_image():
    images = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8)
    loader = cdata.DeviceLoader(images, torch.arange(8), 8, (0, 0, 0), (1 / 255,) * 3,
                                train=True, resized_scale=(1.0, 1.0), resized_ratio=(1.0, 1.0))
    out, _ = next(iter(loader))
    torch.testing.assert_close(out, images.float(), atol=1e-3, rtol=0)


def test_resized_crops_have_img_size_and_stay_inside_the_image():
    # a ramp image (value = column index): a crop of it is a ramp within the image's range
    ramp = torch.arange(40, dtype=torch.uint8).expand(16, 3, 40, 40).contiguous()
    loader = cdata.DeviceLoader(ramp, torch.arange(16), 16, (0, 0, 0), (1, 1, 1), train=True,
                                img_size=10, resized_scale=(0.08, 1.0), seed=1)
    out, _ = next(iter(loader))
    assert out.shape == (16, 3, 10, 10)
    assert out.min() >= 0 and out.max() <= 39
    steps = out[..., 1:] - out[..., :-1]
    assert (steps > 0).all()  # increasing along each row: no flip asked for
    torch.testing.assert_close(out, out[:, :, :1].expand_as(out))  # rows alike
    assert len({round(float(s), 3) for s in steps[:, 0, 0, 0]}) > 1  # crops of many sizes


def test_images_stored_larger_still_are_resized_then_cropped_as_the_cpu_evaluation_transform():
    # a real photo stored at 224 px, evaluated at 128: resized to 146, then the central 128
    photos = (cdata.sample_photos(224, normalize=False) * 255).round().to(torch.uint8)
    info = cdata.DataInfo("photos", "sklearn", 2, 128, ["a", "b"], (0.5,) * 3, (0.25,) * 3, 2, 2)
    loader = cdata.DeviceLoader(photos, torch.arange(2), 2, info.mean, info.std, train=False,
                                img_size=128)
    images, _ = next(iter(loader))
    transform = cdata.build_transforms(128, info.mean, info.std, train=False)
    expected = torch.stack([transform(Image.fromarray(p.permute(1, 2, 0).numpy())) for p in photos])
    assert images.shape == expected.shape == (2, 3, 128, 128)
    # torch's antialiased bilinear and PIL's differ by rounding: a level or two of 255
    assert (images - expected).abs().mean() < 1 / 255 / 0.25
    assert (images - expected).abs().max() < 8 / 255 / 0.25


def test_a_split_of_mixed_sizes_is_stored_as_the_pack_stores_it(tmp_path):
    # torchvision's Imagenette has many sizes; the pack (benchmarks/pack_imagenette.py) resizes
    # each to eval_resize(img_size) on its shorter side and keeps the central square
    import numpy as np
    from torchvision import transforms as T

    rng = np.random.default_rng(0)
    for split, name, shape in (("train", "a", (40, 30)), ("train", "b", (30, 50)),
                               ("val", "a", (30, 50))):
        for i in range(2):
            (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / split / name / f"{i}.png")
    train, val, info = cdata.build_datasets(str(tmp_path), img_size=16)
    loader = cdata.device_loader(train, info, 4, train=False, device="cpu", num_workers=1)
    side = cdata.eval_resize(16)
    pack = T.Compose([T.Resize(side), T.CenterCrop(side), T.PILToTensor()])
    expected = torch.stack([pack(cdata.read_image(path)) for path, _ in train.samples])
    assert loader.images.shape == (4, 3, side, side) and torch.equal(loader.images, expected)
    images, labels = next(iter(loader))  # the evaluation view: the CPU transform's pixels
    cpu = torch.stack([val.transform(cdata.read_image(path)) for path, _ in train.samples])
    torch.testing.assert_close(images, cpu, atol=1e-5, rtol=0)
    assert labels.tolist() == train.targets
    with pytest.raises(ValueError, match=r"one size; found \[\(3, 30, 50\), \(3, 40, 30\)\]"):
        cdata.to_uint8_tensor(train)  # no side to resize to
