import pytest
import torch

from ccoat import profile


def test_env_var_selects_profile(monkeypatch):
    for name in profile.PROFILES:
        monkeypatch.setenv("CCOAT_PROFILE", name)
        assert profile.get_profile() == name


def test_default_follows_hardware(monkeypatch):
    monkeypatch.delenv("CCOAT_PROFILE", raising=False)
    assert profile.get_profile() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_unknown_profile_is_an_error(monkeypatch):
    monkeypatch.setenv("CCOAT_PROFILE", "laptop")
    with pytest.raises(ValueError, match="smoke.*got 'laptop'"):
        profile.get_profile()


def test_choose_picks_by_profile():
    assert profile.choose(smoke=1, cpu=2, gpu=3, profile="cpu") == 2
    with pytest.raises(ValueError):
        profile.choose(smoke=1, cpu=2, gpu=3, profile="tpu")
