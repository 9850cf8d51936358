"""Training recipes: what defines a run (:class:`TrainConfig`, every setting, checked by
:meth:`TrainConfig.validate`), and the settings of every run the book trains or reports.

Like nanoGPT's ``config/``, a recipe is settings only: the :class:`TrainConfig` fields it fixes
(the others keep their defaults); :mod:`ccoat.train` runs them (``ccoat.train.TrainConfig`` is
this class). A chapter sizes its run by the profile
(:mod:`ccoat.profile`), so its recipe comes in one size per profile, named ``NAME-PROFILE``:

- ``cifar10-smoke|cpu|gpu``: the training chapter's runs; the chapter adds the model (three
  attention kinds, one recipe). The smoke size trains on ``digits``, which every install has;
- ``imagenette-smoke|cpu|gpu``: the Imagenette chapter's live demonstration at 128 px;
- ``imagenette128-smoke|cpu|gpu``: the reference pair (CoaT-Lite Tiny and Clustering CoaT Tiny
  at 128 px) whose committed weights the Imagenette and clusters chapters load; the cpu size is
  what one session of the project's 2-core machine trains, the gpu size the full recipe;
- ``cifar10-gpu-budget``: the training chapter's equal-GPU-time runs (one size: one GPU);
- ``imagenette128-finetune-cpu``: a short fine-tune of the reference weights (``--init``),
  with token clustering, on a CPU.

``python -m ccoat.train --recipe NAME`` starts from a recipe (options given override it);
from Python, :func:`cifar10` and :func:`imagenette` return the active profile's size as a
``TrainConfig``, and :func:`recipe` any recipe's settings as a dict.

Progress bars are not a setting of a recipe: the book turns them off (``progress=False``).
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checks import is_integer, is_number
from .data import DATA_ENV
from .model import ATTENTION_KINDS
from .profile import PROFILES, get_profile
from .registry import MODEL_NAMES, registered_name, unwrap

# ---------------------------------------------------------------------------------------------
# What defines a run

AMP_MODES = ("auto", "bf16", "fp16", "off")
# The largest image side a run takes: at 4096 px CoaT-Lite's first stage already holds 1M tokens
# an image (a 1024x1024 grid); a larger side is a typo, refused before a model is built for it.
MAX_IMG_SIZE = 4096
SEED_LIMIT = 2**32  # numpy's seeds are 32-bit: np.random.seed(2**32) fails


# What a resumed run does with an option: the one list of it is each field's ``on_resume``.
FIXED = "fixed"  # what the run computes: must equal the checkpoint's (the default)
MAY_CHANGE = "may change"  # how long or how fast it runs: the checkpoint's unless given
OF_THIS_PROCESS = "of this process"  # where and how this process runs: never the checkpoint's


def _option(default, help: str, on_resume: str = FIXED, **cli):
    """A :class:`TrainConfig` field: its default, its ``--help`` line, what a resumed run does
    with it (``on_resume``), and how the command line takes it where the field's name and type
    do not say (``flag``, argparse's ``choices``, ``nargs``, ``const``; ``flag=None``: not an
    option)."""
    return field(default=default, metadata={"help": help, "on_resume": on_resume, **cli})


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in ``run.json`` and in every checkpoint.

    Every field is an option of the command line (``--batch-size`` for ``batch_size``, typed by
    its annotation, ``--x/--no-x`` for a bool, ``none`` for a number that may be None), with
    the help given here: :func:`command_line` is generated from these fields.
    """

    model: str = _option("coat_lite_tiny_cifar", "a name of ccoat.MODEL_NAMES")
    data: str = _option("digits", "digits, cifar10, cifar100, imagenette or an ImageFolder path")
    data_dir: str | None = _option(None, f"data root (None: ${DATA_ENV})", on_resume=MAY_CHANGE)
    img_size: int | None = _option(None, "image side in pixels (None: the dataset's)")
    attention: str | None = _option(None, "override the model's attention kind")
    token_clustering: str | None = _option(
        None, "run the blocks of --token-stages on clusters of their tokens: pool, bipartite, "
        "lsh or grid (ccoat.cluster_tokens)", choices=("pool", "bipartite", "lsh", "grid"))
    keep: float = _option(0.5, "token clustering: the fraction of a stage's image tokens kept "
                          "as clusters")
    token_stages: tuple[int, ...] = _option((1, 2), "token clustering: the stages (from 1)",
                                            nargs="+")
    epochs: int = _option(10, "epochs to train", on_resume=MAY_CHANGE)
    batch_size: int = _option(128, "global batch size, shared among DDP processes")
    lr: float = _option(1e-3, "peak learning rate (AdamW)")
    min_lr: float = _option(1e-5, "learning rate at the end of the cosine")
    weight_decay: float = _option(0.05, "AdamW weight decay (none on norms, biases, tokens)")
    warmup_epochs: float = _option(1.0, "linear warm-up, in epochs")
    label_smoothing: float = _option(0.1, "label smoothing of the cross-entropy")
    clip_grad: float | None = _option(1.0, "clip the gradient norm to this (none: no clip)")
    drop_path: float = _option(0.1, "stochastic depth rate")
    amp: str = _option("auto", "mixed precision (auto: bf16 or fp16 on a GPU, off on a CPU)",
                       choices=AMP_MODES)
    compile: bool = _option(False, "torch.compile the model", on_resume=MAY_CHANGE)
    channels_last: bool = _option(False, "channels-last memory format", on_resume=MAY_CHANGE)
    ema_decay: float | None = _option(None, "keep an EMA of the weights, e.g. 0.999")
    mixup: float = _option(0.0, "Mixup alpha (0: off)")
    cutmix: float = _option(0.0, "CutMix alpha (0: off)")
    randaugment: str | None = _option(None, 'timm RandAugment spec, e.g. "rand-m9-mstd0.5"')
    augment: bool = _option(True, "random crop/flip (--no-augment: none, for exact comparisons)")
    train_subset: int | None = _option(None, "a fixed random subset of the train split")
    val_subset: int | None = _option(None, "a fixed random subset of the val split")
    steps_per_epoch: int | None = _option(None, "cap on updates per epoch (smoke runs)")
    stop_after: int | None = _option(None, "stop after this many epochs, as if interrupted",
                                     on_resume=OF_THIS_PROCESS)
    num_workers: int = _option(2, "DataLoader worker processes", on_resume=OF_THIS_PROCESS)
    data_on_device: bool = _option(
        False, "decode the splits once and keep and augment them on the device (images of "
        "several sizes, as torchvision's Imagenette, are stored resized to round(img_size / "
        "0.875) on the shorter side and centre-cropped square, as benchmarks/pack_imagenette.py "
        "packs them)")
    time_budget_s: float | None = _option(
        None, "train for this many seconds (--epochs is then an upper bound); the learning-rate "
        "schedule follows the training time", flag="--time-budget", on_resume=MAY_CHANGE)
    threads: int | None = _option(None, "torch.set_num_threads", on_resume=OF_THIS_PROCESS)
    seed: int = _option(0, "seed of the initialisation, the subsets, shuffling, augmentation")
    device: str = _option("auto", "auto, cpu, cuda (the local rank's GPU) or cuda:N",
                          on_resume=OF_THIS_PROCESS)
    out: str | None = _option(None, "the run folder (one run per folder, locked)",
                              on_resume=OF_THIS_PROCESS)
    init: str | None = _option(
        None, "start from the weights in this file (a run's model.safetensors): a fine-tune, "
        "with a new optimiser and schedule; the model is this run's (--model, --attention, "
        "--token-clustering), so weights trained without clustering can be tuned with it")
    resume: bool | str = _option(
        False, "resume from OUT/last.pt, or from the checkpoint given; options not given are the "
        "checkpoint's, options given must equal them (--epochs may grow)", nargs="?", const=True,
        on_resume=OF_THIS_PROCESS)
    progress: bool = _option(True, "progress bars and a line of metrics per epoch",
                             on_resume=OF_THIS_PROCESS)
    command: str | None = _option(None, "recorded in run.json (the command line fills it in)",
                                  flag=None, on_resume=OF_THIS_PROCESS)
    overwrite: bool = _option(False, "OUT holds a run: move it into OUT/replaced-<date>/ and "
                              "start afresh", on_resume=OF_THIS_PROCESS)

    def __post_init__(self):
        if isinstance(self.token_stages, list):  # from the command line or run.json
            self.token_stages = tuple(self.token_stages)

    def validate(self, training: bool = True) -> TrainConfig:
        """Raise ``ValueError`` naming the option (``--name``) of the first bad value; called
        by :func:`fit` and the command line before any work. Returns ``self``."""
        self._check_values()
        self._check_names()
        self._check_paths()
        if training:
            self._check_resume()
        return self

    def _bad(self, name: str, expected: str):
        raise ValueError(f"{name} ({option_flag(name)}) must be {expected}, "
                         f"got {getattr(self, name)!r}")

    def _check(self, name: str, expected: str, ok, optional: bool = False) -> None:
        value = getattr(self, name)
        if not ((optional and value is None) or ok(value)):
            self._bad(name, expected + (" or None" if optional else ""))

    def _check_values(self) -> None:
        """The numbers are in their ranges, the switches are bools."""
        for name in ("epochs", "batch_size"):
            self._check(name, "an integer >= 1", lambda v: is_integer(v) and v >= 1)
        for name in ("train_subset", "val_subset", "steps_per_epoch", "stop_after", "threads"):
            self._check(name, "an integer >= 1", lambda v: is_integer(v) and v >= 1, optional=True)
        self._check("img_size", f"an integer in [1, {MAX_IMG_SIZE}]",
                    lambda v: is_integer(v) and 1 <= v <= MAX_IMG_SIZE, optional=True)
        self._check("num_workers", "an integer >= 0", lambda v: is_integer(v) and v >= 0)
        self._check("seed", "an integer in [0, 2**32)",
                    lambda v: is_integer(v) and 0 <= v < SEED_LIMIT)
        self._check("lr", "a number > 0", lambda v: is_number(v) and v > 0)
        for name in ("min_lr", "weight_decay", "warmup_epochs", "mixup", "cutmix"):
            self._check(name, "a number >= 0", lambda v: is_number(v) and v >= 0)
        if self.min_lr > self.lr:
            self._bad("min_lr", f"<= lr (--lr) {self.lr}")
        for name in ("label_smoothing", "drop_path"):
            self._check(name, "a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1)
        self._check("clip_grad", "a number > 0", lambda v: is_number(v) and v > 0, optional=True)
        self._check("time_budget_s", "a number of seconds > 0", lambda v: is_number(v) and v > 0,
                    optional=True)
        for name in ("augment", "compile", "channels_last", "data_on_device", "overwrite"):
            self._check(name, "True or False", lambda v: isinstance(v, bool))
        self._check("ema_decay", "a number in (0, 1)", lambda v: is_number(v) and 0 < v < 1,
                    optional=True)

    def _check_names(self) -> None:
        """The names (precision, model, attention kinds, data, RandAugment, device) exist."""
        if self.amp not in AMP_MODES:
            self._bad("amp", f"one of {', '.join(AMP_MODES)}")
        if self.model not in MODEL_NAMES:
            self._bad("model", f"one of {', '.join(MODEL_NAMES)}")
        kinds = [self.attention] if isinstance(self.attention, str) else self.attention
        if kinds is not None and (len(kinds) not in (1, 4) or any(k not in ATTENTION_KINDS for k in kinds)):
            self._bad("attention", f"one of {', '.join(ATTENTION_KINDS)} (or a list of 4, one per "
                      f"stage)")
        if not isinstance(self.data, str) or not self.data:
            self._bad("data", "digits, cifar10, cifar100, imagenette or an ImageFolder path")
        if self.randaugment is not None:
            from timm.data.auto_augment import rand_augment_transform

            try:
                rand_augment_transform(self.randaugment, {})
            except Exception:  # noqa: BLE001 (timm raises anything for a spec it cannot read)
                self._bad("randaugment", 'a timm RandAugment spec such as "rand-m9-mstd0.5"')
        if self.token_clustering is None:
            self._check_unclustered()
        else:
            from .token_clustering import check_token_clustering

            try:
                check_token_clustering(self.token_clustering, self.keep, self.token_stages)
            except ValueError as error:
                raise ValueError(f"token clustering (--token-clustering, --keep, "
                                 f"--token-stages): {error}") from None
        if self.init is not None and not (isinstance(self.init, str) and Path(self.init).is_file()):
            self._bad("init", "an existing weights file (a run's model.safetensors)")
        if self.data_on_device and self.randaugment:
            self._bad("randaugment", "None with data_on_device (--data-on-device augments on "
                      "the device: random crops and flips only)")
        device_from(self.device, 0)  # raises naming --device

    def _check_unclustered(self) -> None:
        """Without token clustering, its options keep their defaults: another value would be
        ignored without a word. (A resumed run is compared with its checkpoint instead.)"""
        if self.resume:
            return
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        for name in ("keep", "token_stages"):
            if _plain(getattr(self, name)) != _plain(defaults[name]):
                self._bad(name, "left at its default without token_clustering "
                          "(--token-clustering): it sets token clustering only")

    def _check_paths(self) -> None:
        """``out`` is a folder or can be made one: neither it nor a folder above it is a file;
        a checkpoint given to ``resume`` is a file, not its run's folder."""
        if isinstance(self.resume, str) and Path(self.resume).is_dir():
            self._bad("resume", "a checkpoint file (a last.pt, or a model.safetensors to "
                      "evaluate), not a folder")
        if self.out is None:
            return
        if not isinstance(self.out, (str, Path)) or not str(self.out):
            self._bad("out", "a folder path")
        for path in (Path(self.out), *Path(self.out).parents):
            if path.exists():
                if not path.is_dir():
                    self._bad("out", f"a folder (or one to create), but {path} is a file")
                return

    def _check_resume(self) -> None:
        """A run that resumes or overwrites says where (``out``), and does not do both."""
        if self.resume is True and not self.out:
            raise ValueError("resume (--resume) needs out (--out): the folder of the run to "
                             "continue")
        if isinstance(self.resume, str) and self.resume and not self.out:
            raise ValueError(f"resume (--resume {self.resume}) needs out (--out): where the "
                             f"continued run is written")
        if self.resume and self.overwrite and not isinstance(self.resume, str):
            raise ValueError("resume (--resume) and overwrite (--overwrite) exclude each "
                             "other: continue the run in out, or move it aside")


def model_options(config) -> dict:
    """The keywords of :func:`ccoat.create_model` that a run's config (a :class:`TrainConfig` or
    the dict saved in ``run.json`` and checkpoints) sets besides the model's name: its attention
    kind and token clustering. Every place that rebuilds a run's model reads them here."""
    config = dataclasses.asdict(config) if isinstance(config, TrainConfig) else config
    options = {"attention": config["attention"]} if config.get("attention") else {}
    if config.get("token_clustering"):
        options.update(token_clustering=config["token_clustering"], keep=config["keep"],
                       token_stages=tuple(config["token_stages"]))
    return options


def _plain(value):
    return list(value) if isinstance(value, tuple) else value  # the command line gives lists


def option_flag(name: str) -> str | None:
    """The command-line option of the :class:`TrainConfig` field ``name`` (``"--time-budget"``
    for ``time_budget_s``), or None for a field that is not an option (``command``)."""
    metadata = {f.name: f.metadata for f in dataclasses.fields(TrainConfig)}[name]
    return metadata.get("flag", "--" + name.replace("_", "-"))


def device_from(name: str, local_rank: int) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` (this process's GPU: the local rank's)
    or ``cuda:N``; ``ValueError`` naming ``--device`` for anything this machine cannot run."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device (--device) must be auto, cpu, cuda or cuda:N, got {name!r}") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device (--device) is {name!r}, but CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", local_rank)  # "cuda": this process's GPU
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device (--device) is {name!r}, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def check_given_model(config: TrainConfig, model: torch.nn.Module | None) -> None:
    """A given model is what ``config`` says (its name, and its attention kinds where the config
    names them): the run's record, and the model rebuilt from it to score it, must be the one
    trained. Kinds share their weights, so a mismatch would load and score another model."""
    name = registered_name(model) if model is not None else None
    if name is not None and name != config.model:
        raise ValueError(f"model (--model) is {config.model!r}, but the model given to fit is "
                         f"a {name}: give config.model={name!r}, or no model")
    kinds = getattr(unwrap(model), "attention_kinds", None) if model is not None else None
    if config.attention and kinds is not None:
        wanted = [config.attention] * 4 if isinstance(config.attention, str) \
            else list(config.attention)
        if list(kinds) != wanted:
            raise ValueError(f"attention (--attention) is {config.attention!r}, but the model "
                             f"given to fit has the kinds {list(kinds)}")


def model_given(model: torch.nn.Module) -> dict | None:
    """What ``run.json`` and the checkpoint record of a model not built from a registered name
    (``config.model`` does not describe it); None for one that is ``config.model``."""
    if registered_name(model) is not None:
        return None
    return {"class": type(unwrap(model)).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "note": "given to fit, not built from config.model"}


def resolve_device(name: str, local_rank: int) -> torch.device:
    """The device named (:func:`device_from`), made the current CUDA device when it is a GPU:
    a run or a scoring resolves its device once, here."""
    device = device_from(name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``, or None for full precision.

    ``auto`` takes bf16 only where the GPU computes it natively, from compute capability 8.0
    (Ampere) on, and fp16 (with a gradient scaler) below. ``torch.cuda.is_bf16_supported()``
    cannot decide it: recent torch answers yes on a T4 (7.5, Colab's free GPU) too, where bf16
    is emulated without tensor cores. ``bf16`` asks for it whatever the GPU."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be auto, bf16, fp16 or off, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.get_device_capability(device) >= (8, 0):
        return torch.bfloat16
    return torch.float16


def options_on_resume(*kinds: str) -> tuple[str, ...]:
    """The :class:`TrainConfig` fields whose ``on_resume`` is one of ``kinds`` (:data:`FIXED`,
    :data:`MAY_CHANGE`, :data:`OF_THIS_PROCESS`)."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig)
                 if f.metadata["on_resume"] in kinds)


# ---------------------------------------------------------------------------------------------
# The command line, generated from TrainConfig's fields


def _or_none(type_):
    """``int`` or ``float`` on the command line, where ``none`` (or nothing) means None."""
    def convert(text: str):
        return None if text.lower() in ("none", "") else type_(text)

    convert.__name__ = f"{type_.__name__} (or none)"  # argparse's "invalid float (or none) value"
    return convert


def _argparse_keywords(option: dataclasses.Field) -> dict:
    """How the command line takes a :class:`TrainConfig` field: typed by its annotation
    (``none`` for a number that may be None), a bool as ``--x/--no-x``."""
    keywords = {k: v for k, v in option.metadata.items()
                if k not in ("help", "flag", "on_resume")}
    keywords.update(dest=option.name, default=option.default, help=option.metadata["help"])
    annotation = typing.get_type_hints(TrainConfig)[option.name]
    if annotation is bool:
        return keywords | {"action": argparse.BooleanOptionalAction}
    types = typing.get_args(annotation) or (annotation,)
    number = next((t for t in types if t in (int, float)), None)
    if number is not None:
        keywords["type"] = _or_none(number) if type(None) in types else number
    return keywords


def command_line(suppress: bool = False) -> argparse.ArgumentParser:
    """The parser of ``python -m ccoat.train``: an option for every :class:`TrainConfig` field
    (but ``command``), ``--recipe`` to start from, and ``--eval-only``/``--ema`` to evaluate
    instead of training. ``suppress``: no defaults, so that parsing tells what was given."""
    p = argparse.ArgumentParser(
        prog="python -m ccoat.train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
        description="Training and evaluation: one function for the notebooks, one command "
        "line for everyone.")
    p.add_argument("--recipe", choices=list(RECIPES), metavar="NAME",
                   help="start from a named recipe of ccoat.recipes (" + ", ".join(RECIPES)
                   + "); options given here override it")
    for option in dataclasses.fields(TrainConfig):
        if option_flag(option.name) is not None:
            p.add_argument(option_flag(option.name), **_argparse_keywords(option))
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate the checkpoint given by --resume (top-1/top-5, images/s)")
    p.add_argument("--ema", action="store_true", help="with --eval-only: evaluate the EMA weights")
    if suppress:
        for action in p._actions:
            action.default = argparse.SUPPRESS
    return p


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    """The run's config, and the parsed arguments; ``args.explicit`` names the config options
    given on the command line, directly or by ``--recipe`` (the others are defaults)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    p = command_line()
    known, _ = p.parse_known_args(argv)
    given = recipe(known.recipe) if known.recipe else {}
    p.set_defaults(**given)
    args = p.parse_args(argv)
    args.explicit = (set(vars(command_line(suppress=True).parse_args(argv))) | set(given)) - {"help"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["command"] = "python -m ccoat.train " + " ".join(shlex.quote(str(a)) for a in argv)
    return TrainConfig(**values), args





def refuse_unused_options(config: TrainConfig, explicit: set[str]) -> None:
    """Options given that the run would ignore (their defaults pass :meth:`TrainConfig.validate`
    unseen): token clustering's ``--keep`` and ``--token-stages`` without it."""
    unused = [option_flag(k) for k in ("keep", "token_stages") if k in explicit]
    if unused and config.token_clustering is None:
        raise ValueError(f"{' and '.join(unused)} set token clustering, but no "
                         f"--token-clustering was given (pool, bipartite, lsh or grid)")


# ---------------------------------------------------------------------------------------------
# The recipes

_IMAGENETTE = dict(model="coat_lite_tiny", data="imagenette", batch_size=64, lr=2e-3,
                   warmup_epochs=0.5, num_workers=2, seed=0)

# The cpu recipes hold their splits in memory (data_on_device on the CPU): decoded once, cropped
# and flipped as tensors. On a 2-core machine the loader's worker processes otherwise take the
# cores from the model (benchmarks/bench_train_cpu.py: 1.44x images/s for CIFAR-10, 1.17x for
# Imagenette at 128 px, fp32). bf16 autocast (--amp bf16) doubles that again on CPUs with
# native bf16 and costs on others, so it stays the user's choice.
RECIPES: dict[str, dict] = {
    # The training chapter: the same recipe for three attention kinds. smoke: a few updates on
    # the digits; cpu: two short epochs on a CIFAR-10 subset; gpu: the full recipe, with
    # RandAugment, Mixup/CutMix and an EMA of the weights.
    "cifar10-smoke": dict(
        data="digits", epochs=2, batch_size=16, train_subset=64, val_subset=64,
        steps_per_epoch=2, num_workers=0, warmup_epochs=0.5, seed=0),
    "cifar10-cpu": dict(
        data="cifar10", epochs=2, batch_size=64, train_subset=640, val_subset=320,
        data_on_device=True, num_workers=1, warmup_epochs=0.5, seed=0),
    "cifar10-gpu": dict(
        data="cifar10", epochs=100, batch_size=256, lr=2e-3, warmup_epochs=5,
        randaugment="rand-m9-mstd0.5", mixup=0.8, cutmix=1.0, ema_decay=0.9998, num_workers=4,
        seed=0),
    # CIFAR-10 on one GPU for a fixed wall-clock budget (the equal-GPU-time comparison of the
    # training chapter): the splits live on the GPU as uint8 and are cropped and flipped there,
    # bf16 autocast, the learning rate warms up for two epochs and then follows a cosine in
    # training seconds that ends when the budget is spent. --epochs is only an upper bound.
    "cifar10-gpu-budget": dict(
        model="coat_lite_tiny_cifar", data="cifar10", epochs=1000, time_budget_s=420.0,
        batch_size=512, lr=2e-3, min_lr=1e-5, weight_decay=0.05, warmup_epochs=2.0,
        label_smoothing=0.1, clip_grad=1.0, drop_path=0.1, amp="bf16", data_on_device=True,
        num_workers=8, seed=0, device="cuda"),
    # The Imagenette chapter's live demonstration at 128 px (the chapters convert the committed
    # reference models below instead): smoke, a few updates; cpu, a few updates on a subset
    # (under a minute on 2 cores); gpu, ten epochs (minutes on a T4).
    "imagenette-smoke": _IMAGENETTE | dict(img_size=128, epochs=1, train_subset=64,
                                           val_subset=32, steps_per_epoch=2, num_workers=0),
    "imagenette-cpu": _IMAGENETTE | dict(img_size=128, epochs=1, train_subset=256,
                                         val_subset=128, data_on_device=True, num_workers=1),
    "imagenette-gpu": _IMAGENETTE | dict(img_size=128, epochs=10, num_workers=4),
    # The reference pair at 128 px (a 32x32 first-stage grid: 1,024 tokens), one recipe for
    # CoaT-Lite Tiny and (with --model ccoat_lite_tiny) Clustering CoaT Tiny; the chapters load
    # the committed weights. cpu: what fits a session on the project's 2-core machine (two
    # epochs, one thread each, the pair side by side; each epoch scored on 1,000 val images,
    # the final weights on all 3,925); gpu: the full recipe, with RandAugment and Mixup/CutMix.
    "imagenette128-smoke": _IMAGENETTE | dict(img_size=128, epochs=1, train_subset=128,
                                              val_subset=64, steps_per_epoch=2, num_workers=0),
    "imagenette128-cpu": _IMAGENETTE | dict(img_size=128, epochs=2, val_subset=1000,
                                            threads=1, data_on_device=True, num_workers=1),
    # gpu: the splits packed at 146 px (benchmarks/pack_imagenette.py) live on the GPU, where
    # they are random-resized-cropped to 128 px and flipped (val: centre-cropped); bf16.
    "imagenette128-gpu": _IMAGENETTE | dict(
        img_size=128, epochs=100, batch_size=128, lr=1e-3, warmup_epochs=2, amp="bf16",
        data_on_device=True, num_workers=8, device="cuda"),
    # A short fine-tune of the reference weights (--init RUN/model.safetensors) with token
    # clustering (--token-clustering METHOD --keep K), two epochs (4% of the reference's 50) on
    # the 2-core CPU: the 146-px pack held in memory (benchmarks/pack_imagenette.py, unpacked;
    # no JPEG decoding per epoch) and bf16 autocast, which pays on CPUs with native bf16
    # (AVX512-BF16, AMX; benchmarks/bench_train_cpu.py: 2x images/s together on such a CPU) and
    # costs on others (then pass --amp off).
    "imagenette128-finetune-cpu": _IMAGENETTE | dict(
        img_size=128, epochs=2, lr=1e-4, min_lr=1e-6, warmup_epochs=0.2, amp="bf16",
        data_on_device=True, val_subset=1000, device="cpu"),
}


def recipe(name: str, **overrides) -> dict:
    """The recipe ``name`` with ``overrides`` applied (any :class:`TrainConfig` field)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return {**RECIPES[name], **overrides}


def cifar10(profile: str | None = None, **overrides) -> TrainConfig:
    """The training chapter's recipe at ``profile`` (default: the active one); give ``model``
    (and ``attention``) to choose what it trains."""
    return TrainConfig(**recipe(_sized("cifar10", profile), **overrides))


def imagenette(profile: str | None = None, **overrides) -> TrainConfig:
    """The Imagenette chapter's live run at ``profile`` (default: the active one)."""
    return TrainConfig(**recipe(_sized("imagenette", profile), **overrides))


def _sized(name: str, profile: str | None) -> str:
    profile = profile or get_profile()
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    return f"{name}-{profile}"
