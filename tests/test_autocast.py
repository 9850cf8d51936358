"""Every attention kind under ``torch.autocast``: finite outputs close to float32, a few training
steps without NaN, and hash codes that do not change with the precision (computed in float32).

Tolerance: the logits under autocast are within 3% of the largest float32 logit (bf16 keeps 8
significant bits, ~0.4% per rounding; measured on CPU with bf16: 0.8% to 1.1% for every kind).
The CUDA cases (fp16 and bf16) are skipped without a GPU.
"""
import pytest
import torch
import torch.nn.functional as F

import ccoat
from ccoat.data import sample_photos
from ccoat.hashing import E2LSH, e2lsh_codes
from ccoat.model import ATTENTION_KINDS

NO_CUDA = not torch.cuda.is_available()
PRECISIONS = [
    pytest.param(("cpu", torch.bfloat16), id="cpu-bf16"),
    pytest.param(("cuda", torch.float16), id="cuda-fp16",
                 marks=pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device (fp16 autocast is CUDA's)")),
    pytest.param(("cuda", torch.bfloat16), id="cuda-bf16",
                 marks=pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device")),
]
RELATIVE_TOLERANCE = 0.03


def _images(device):
    return F.interpolate(sample_photos(64, 2), size=32).to(device)  # real photos, 32x32


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_autocast_output_is_finite_and_close_to_float32(kind, precision):
    device, dtype = precision
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny_cifar", attention=kind).eval().to(device)
    x = _images(device)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast(device, dtype=dtype):
            out = model(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    error = (out.float() - reference).abs().max().item()
    assert error <= RELATIVE_TOLERANCE * reference.abs().max().item(), (kind, error)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_autocast_trains_a_few_steps_without_nan(kind, precision):
    device, dtype = precision
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny_cifar", attention=kind, num_classes=10).train().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
    x, y = _images(device), torch.tensor([3, 7], device=device)
    losses = []
    for _ in range(3):
        with torch.autocast(device, dtype=dtype):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < losses[0], losses  # it learns the two labels


@pytest.mark.parametrize("precision", PRECISIONS)
def test_hash_codes_under_autocast_equal_float32_codes(precision):
    device, dtype = precision
    torch.manual_seed(0)
    hasher = E2LSH(8, n_hashes=32, bucket_width=0.5).to(device)
    x = torch.randn(2, 8, 257, 8, device=device)
    reference, reference_ids = hasher.codes(x), hasher(x).ids
    with torch.autocast(device, dtype=dtype):
        assert torch.equal(hasher.codes(x), reference)
        assert torch.equal(hasher(x).ids, reference_ids)
    # Low-precision queries are hashed as the float32 values they hold.
    low = x.to(dtype)
    assert torch.equal(hasher.codes(low), hasher.codes(low.float()))
    # Not a vacuous check: the same projection done in low precision moves points across
    # bucket borders.
    a, b = hasher.projections, hasher.offsets
    rounded = torch.floor((low.reshape(-1, 8) @ a.to(dtype) + b.to(dtype)).float() / 0.5)
    assert not torch.equal(rounded, hasher.codes(low).reshape(-1, 32))


def test_e2lsh_codes_are_float32_whatever_the_input_dtype():
    x = torch.randn(5, 8, dtype=torch.bfloat16)
    a, b = torch.randn(8, 4), torch.rand(4)
    codes = e2lsh_codes(x, a, b, 1.0)
    assert codes.dtype == torch.float32
    assert torch.equal(codes, torch.floor((x.float() @ a + b) / 1.0))
