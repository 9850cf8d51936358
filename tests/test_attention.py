"""ccoat.attention: what CPE and CRPE do with the class token, and one state dict for every
attention kind (ConvAttention keeps its core's own buffers)."""
import pytest
import torch

import ccoat
from ccoat.model import CLUSTERED_KINDS


def test_class_token_sees_no_convolution():
    # The CRPE gives the class token a zero row; the CPE passes it through unchanged.
    stage = ccoat.create_model("coat_lite_tiny").stages[0]
    x = torch.randn(2, 1 + 4 * 4, 64)
    assert torch.equal(stage.cpe(x, (4, 4))[:, 0], x[:, 0])
    q, v = torch.randn(2, 8, 17, 8), torch.randn(2, 8, 17, 8)
    assert torch.equal(stage.crpe(q, v, (4, 4))[:, :, 0], torch.zeros(2, 8, 8))


def _assert_same_parameters(a, b):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    assert all(torch.equal(pa[n], pb[n]) for n in pa)


@pytest.mark.parametrize("kind", CLUSTERED_KINDS)
def test_one_state_dict_loads_into_every_kind(kind):
    torch.manual_seed(0)
    factorized = ccoat.create_model("coat_lite_tiny_cifar")
    clustered = ccoat.create_model("coat_lite_tiny_cifar", attention=kind)
    own = clustered.stages[0].blocks[0].attn.core.hasher.projections.clone()
    clustered.load_state_dict(factorized.state_dict())  # strict: the core keeps its projections
    _assert_same_parameters(clustered, factorized)
    assert torch.equal(clustered.stages[0].blocks[0].attn.core.hasher.projections, own)

    torch.manual_seed(1)
    other = ccoat.create_model("coat_lite_tiny_cifar", attention=kind)
    factorized.load_state_dict(other.state_dict())  # strict: the hash buffers are dropped
    _assert_same_parameters(factorized, other)
    clustered.load_state_dict(other.state_dict())  # same kind: the projections travel too
    assert torch.equal(clustered.stages[0].blocks[0].attn.core.hasher.projections,
                       other.stages[0].blocks[0].attn.core.hasher.projections)
