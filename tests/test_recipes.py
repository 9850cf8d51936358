"""Named recipes and runs sized by wall-clock time (ccoat.recipes, TimeBudgetSchedule)."""
import dataclasses
import json
import math

import pytest
import torch

from ccoat import recipes
from ccoat import train as ctrain
from ccoat.model import CoaTLite, CoaTLiteConfig
from ccoat.profile import PROFILES
from ccoat.recipes import RECIPES, TrainConfig, recipe


def test_recipe_fields_are_train_config_fields_and_overrides_win():
    for name in RECIPES:
        config = ctrain.TrainConfig(**recipe(name, model="ccoat_lite_tiny_cifar"))
        assert config.model == "ccoat_lite_tiny_cifar"
        ctrain.TrainConfig(**recipe(name, device="cpu")).validate()  # every value is valid
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        recipe("nope")


@pytest.mark.parametrize("family", [recipes.cifar10, recipes.imagenette])
def test_the_chapters_recipes_come_in_one_size_per_profile(family, monkeypatch):
    smoke, cpu, gpu = (family(profile) for profile in PROFILES)
    assert all(isinstance(c, ctrain.TrainConfig) for c in (smoke, cpu, gpu))
    assert smoke.steps_per_epoch and cpu.steps_per_epoch is None and gpu.epochs > cpu.epochs
    monkeypatch.setenv("CCOAT_PROFILE", "cpu")
    assert family() == cpu and family(seed=3) == dataclasses.replace(cpu, seed=3)
    with pytest.raises(ValueError, match="profile must be one of smoke, cpu, gpu, got 'big'"):
        family("big")


def test_the_imagenette_recipes_train_coat_lite_tiny_at_128_px():
    for profile in PROFILES:
        for config in (recipes.imagenette(profile), TrainConfig(**recipe(f"imagenette128-{profile}"))):
            assert (config.model, config.data, config.img_size) == \
                ("coat_lite_tiny", "imagenette", 128)
    # the reference pair: one recipe, the model named on the command line
    config, _ = recipes.parse_args(["--recipe", "imagenette128-cpu", "--model", "ccoat_lite_tiny"])
    assert config.model == "ccoat_lite_tiny" and config.epochs == RECIPES["imagenette128-cpu"]["epochs"]


def test_the_command_line_takes_every_recipe_by_name():
    for name in RECIPES:
        config, args = recipes.parse_args(["--recipe", name, "--device", "cpu"])
        assert config == ctrain.TrainConfig(**recipe(name, device="cpu"), command=config.command)
        assert set(recipe(name)) <= args.explicit


def test_command_line_starts_from_the_recipe_and_explicit_options_override_it():
    config, _ = recipes.parse_args(["--recipe", "cifar10-gpu-budget", "--time-budget", "60",
                                   "--model", "ccoat_lite_tiny_cifar"])
    expected = RECIPES["cifar10-gpu-budget"]
    assert config.time_budget_s == 60 and config.model == "ccoat_lite_tiny_cifar"
    assert config.batch_size == expected["batch_size"] and config.data_on_device
    assert "--recipe cifar10-gpu-budget" in config.command


def test_time_budget_schedule_warms_up_then_ends_at_the_floor_when_the_budget_is_spent():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = ctrain.TimeBudgetSchedule(optimizer, lr=1.0, min_lr=0.01, budget_s=100.0,
                                         warmup_updates=10)
    lr = lambda: optimizer.param_groups[0]["lr"]  # noqa: E731
    assert lr() == pytest.approx(1e-3)
    schedule.step_update(5, 2.0)
    assert lr() == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    schedule.step_update(10, 4.0)  # warm-up over: the cosine starts at 4 s
    assert lr() == pytest.approx(1.0)
    schedule.step_update(500, 52.0)  # half-way through the seconds left
    assert lr() == pytest.approx(0.01 + 0.5 * 0.99 * (1 + math.cos(math.pi / 2)))
    schedule.step_update(900, 100.0)
    assert lr() == pytest.approx(0.01)
    restored = ctrain.TimeBudgetSchedule(optimizer, 1.0, 0.01, 100.0, 10)
    restored.load_state_dict(schedule.state_dict())
    assert restored.lr_at(500, 52.0) == schedule.lr_at(500, 52.0)


def test_a_run_with_a_time_budget_stops_when_it_is_spent():
    torch.manual_seed(0)
    tiny = CoaTLite(CoaTLiteConfig((16, 16, 32, 32), (1, 1, 1, 1), (2, 2, 2, 2), patch_size=2),
                    num_classes=10, img_size=32)
    config = ctrain.TrainConfig(data="digits", epochs=1000, time_budget_s=2.0, batch_size=16,
                                train_subset=128, val_subset=32, warmup_epochs=0.5, num_workers=0,
                                device="cpu", threads=1, progress=False, data_on_device=True,
                                min_lr=1e-5)
    history = ctrain.fit(config, model=tiny).history
    assert history[-1]["updates"] > 4, "the budget should outlast the warm-up on any machine"
    assert 1 <= len(history) < 1000
    assert history[-1]["train_elapsed_s"] >= 2.0
    assert all(h["train_elapsed_s"] < 2.0 for h in history[:-1])
    assert history[-1]["lr"] == pytest.approx(1e-5, rel=1e-3)


def test_token_clustering_options_are_checked_and_rebuild_the_model():
    from ccoat.recipes import model_options

    with pytest.raises(ValueError, match=r"--token-clustering.*keep must be a fraction in \(0, 1\], got 1.5"):
        TrainConfig(token_clustering="pool", keep=1.5).validate()
    with pytest.raises(ValueError, match=r"--token-stages.*stages must be stage numbers"):
        TrainConfig(token_clustering="lsh", token_stages=[5]).validate()
    with pytest.raises(ValueError, match=r"randaugment \(--randaugment\) must be None with data_on_device"):
        TrainConfig(data_on_device=True, randaugment="rand-m9-mstd0.5").validate()
    config = TrainConfig(attention="softmax", token_clustering="bipartite", keep=0.5,
                         token_stages=[1, 2])
    assert config.token_stages == (1, 2)  # a list (command line, run.json) becomes a tuple
    assert model_options(config) == model_options(dataclasses.asdict(config)) == dict(
        attention="softmax", token_clustering="bipartite", keep=0.5, token_stages=(1, 2))
    assert model_options(TrainConfig()) == {}  # the model's own attention, every token


def test_a_token_clustered_checkpoint_resumes_with_its_stages_read_back_from_json():
    from ccoat.runfolder import config_differences

    config = TrainConfig(token_clustering="pool", keep=0.25)
    saved = json.loads(json.dumps(dataclasses.asdict(config)))  # as run.json holds it
    assert saved["token_stages"] == [1, 2] and config_differences(saved, config) == []
    assert config_differences(saved, TrainConfig(token_clustering="pool", keep=0.5)) == [
        "keep: checkpoint 0.25, now 0.5"]


def test_every_config_field_is_a_command_line_option_and_every_option_a_field():
    parser = recipes.command_line()
    options = {a.dest: a for a in parser._actions}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(fields) - set(options) == {"command"}  # filled in by the command line itself
    assert set(options) - set(fields) == {"help", "recipe", "eval_only", "ema"}
    defaults = TrainConfig()
    for name, option in options.items():
        if name in fields:
            assert option.default == getattr(defaults, name), name
            assert option.help and option.option_strings[0] == recipes.option_flag(name), name


def test_the_spellings_of_the_readme_and_scripts_still_parse():
    config, args = recipes.parse_args([
        "--no-augment", "--compile", "--channels-last", "--data-on-device", "--no-progress",
        "--clip-grad", "none", "--ema-decay", "0.99", "--time-budget", "60", "--img-size", "64",
        "--resume", "--out", "runs/x", "--overwrite", "--eval-only", "--ema"])
    assert (config.augment, config.compile, config.channels_last, config.data_on_device,
            config.progress) == (False, True, True, True, False)
    assert (config.clip_grad, config.ema_decay, config.time_budget_s, config.img_size) == \
        (None, 0.99, 60.0, 64)
    assert (config.resume, config.out, config.overwrite, args.eval_only, args.ema) == \
        (True, "runs/x", True, True, True)
    assert recipes.parse_args(["--resume", "runs/x/last.pt"])[0].resume == "runs/x/last.pt"
    assert recipes.parse_args([])[0] == dataclasses.replace(TrainConfig(),
                                                            command="python -m ccoat.train ")


def test_bad_amp_is_rejected():
    with pytest.raises(ValueError, match="amp must be"):
        recipes.amp_dtype("fp8", torch.device("cpu"))


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                  ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16)])
def test_auto_precision_takes_bf16_only_where_the_gpu_computes_it(monkeypatch, capability,
                                                                   expected):
    """A T4 (7.5) gets fp16 (and so a grad scaler) although torch calls bf16 supported there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    gpu = torch.device("cuda", 0)
    assert recipes.amp_dtype("auto", gpu) == expected
    assert recipes.amp_dtype("bf16", gpu) == torch.bfloat16  # asked for: given
    assert recipes.amp_dtype("fp16", gpu) == torch.float16
    assert recipes.amp_dtype("off", gpu) is None
    assert recipes.amp_dtype("auto", torch.device("cpu")) is None


def test_a_prefix_of_an_option_is_refused_as_in_every_ccoat_command(capsys):
    """``--img 64`` is not a second spelling of ``--img-size`` (as in ``ccoat.sweep`` and the
    benchmarks: one vocabulary, no abbreviations)."""
    with pytest.raises(SystemExit):
        recipes.parse_args(["--recipe", "cifar10-cpu", "--img", "64"])
    assert "unrecognized arguments: --img" in capsys.readouterr().err
    config, _ = recipes.parse_args(["--recipe", "cifar10-cpu", "--img-size", "64"])
    assert config.img_size == 64
