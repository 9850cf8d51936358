"""What a forward pass takes on a machine: time, throughput, peak memory, time per component.

:mod:`ccoat.cost` says what a pass costs on paper (MACs, other operations, parameters); this
module measures it. Every comparison of times in ccoat (the cost sweep, the benchmarks) goes
through one timer, :func:`alternate`: the things compared run in turn, round after round, so a
change in the machine's load hits them alike, and the ratio of two of them is measured within
each round (:func:`round_ratio`), the number least moved by a busy machine.

Peak memory
-----------
On CUDA: the caching allocator's ``max_memory_allocated`` during the pass minus what was
allocated before it (weights and the input batch are excluded). On CPU: the same quantity
measured by :class:`LiveTensorMemory`, a ``TorchDispatchMode`` that adds up the bytes of every
tensor storage an operator creates and subtracts them when the storage is freed, and keeps the
maximum. It sees every tensor the operators allocate, but not a kernel's private scratch memory
nor the allocator's rounding; on CUDA the two methods agree to within that.
"""
from __future__ import annotations

import contextlib
import importlib
import re
import statistics
import time
import weakref
from collections import defaultdict
from typing import Callable

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from . import checks
from .cost import (
    STAGES,
    as_hw,
    check_input,
    component_of,
    has_clustering,
    images_for,
)

# ---------------------------------------------------------------------------------------------
# The one timer


def _no_sync() -> None:
    pass


def device_sync(device) -> Callable[[], None]:
    """What waits for ``device``'s queued work: ``torch.cuda.synchronize`` on CUDA, else nothing
    (CPU kernels run synchronously)."""
    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else _no_sync


def alternate(calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
              sync: Callable[[], None] = _no_sync) -> dict[str, list[float]]:
    """Wall-clock seconds of every call in ``calls``, run in turn: ``warmup`` untimed rounds,
    then ``repeats`` timed ones. The order is reversed every round (A, B, C, then C, B, A), so
    no call always runs first or always right after the same other one. ``sync`` is called
    before and after each timed call (:func:`device_sync` for a GPU). Returns each call's
    ``repeats`` times, in rounds: ``times[name][i]`` was measured in round ``i``.
    """
    if not calls:
        raise ValueError("expected at least one call to time, got none")
    if not (checks.is_integer(repeats) and repeats >= 1 and
            checks.is_integer(warmup) and warmup >= 0):
        raise ValueError(f"repeats must be an integer >= 1 and warmup >= 0, got {repeats!r} "
                         f"and {warmup!r}")
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            sync()
            start = time.perf_counter()
            calls[name]()
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def round_ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """The median over rounds of ``name``'s time over ``reference``'s in the same round."""
    return statistics.median(t / r for t, r in zip(times[name], times[reference]))


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """Each call's median time."""
    return {name: statistics.median(t) for name, t in times.items()}


# ---------------------------------------------------------------------------------------------
# Memory


class LiveTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage created by operators while the mode is active.

    Every operator output whose storage is new is added to a running total, and subtracted when
    the storage is freed (a weak reference's callback); ``peak`` is the running total's maximum.
    Storages that existed before (weights, the input) are not counted. Works on any device,
    ``meta`` included; it does not see a kernel's private scratch memory.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: dict[int, weakref.ref] = {}

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.pop(key, None)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Views and in-place results share an input's storage: nothing new was allocated.
        inputs = {id(t.untyped_storage()) for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for t in torch.utils._pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in inputs or (key in self._seen and self._seen[key]() is storage):
                continue
            nbytes = storage.nbytes()
            self._seen[key] = weakref.ref(storage, lambda _, k=key, n=nbytes: self._free(k, n))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


def _step(model, x, train: bool):
    if train:
        model(x).float().logsumexp(dim=1).mean().backward()
    else:
        with torch.no_grad():
            model(x)


def peak_memory(model: nn.Module, img_size=224, batch_size: int = 1, *, train: bool = False,
                images: torch.Tensor | None = None) -> dict:
    """Peak memory of one forward pass (``train=True``: forward and backward) beyond the weights
    and the input, on the model's device. Returns ``{"bytes": ..., "method": ...}``."""
    check_input(model, img_size, batch_size)
    x = model_input(model, img_size, batch_size, images)
    device = x.device
    with in_mode(model, train):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            _step(model, x, train)
            torch.cuda.synchronize(device)
            peak, method = torch.cuda.max_memory_allocated(device) - before, "cuda allocator"
        else:
            with LiveTensorMemory() as tracker:
                _step(model, x, train)
            peak, method = tracker.peak, "live tensor storage (dispatch mode)"
    return {"bytes": int(peak), "method": method}


def model_input(model: nn.Module, img_size=224, batch_size: int = 1,
                images: torch.Tensor | None = None) -> torch.Tensor:
    """The batch a measurement runs on, on the model's device: ``images`` (checked against the
    size), else sample photos for a clustered model (its cost depends on the data), else
    seeded noise."""
    if images is not None or has_clustering(model):
        return images_for(model, img_size, batch_size, images)
    H, W = as_hw(img_size)
    device = next(model.parameters()).device
    return torch.randn(batch_size, model.in_chans, H, W, generator=torch.Generator().manual_seed(0)).to(device)


# ---------------------------------------------------------------------------------------------
# Time


def pass_call(model: nn.Module, x: torch.Tensor, train: bool = False) -> Callable[[], None]:
    """One pass of ``model`` on ``x`` as a call for :func:`alternate`: a forward pass without
    gradients, or (``train=True``) forward and backward, the gradients then dropped. The model's
    train/eval mode is the caller's (:func:`in_mode`)."""
    def call() -> None:
        _step(model, x, train)
        if train:
            model.zero_grad(set_to_none=True)
    return call


@contextlib.contextmanager
def in_mode(model: nn.Module, train: bool):
    """``model`` in training (``train=True``) or eval mode for the block, then as it was."""
    was_training = model.training
    model.train(train)
    try:
        yield model
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def throughput(model: nn.Module, img_size=224, batch_size: int = 1, *, train: bool = False,
               repeats: int = 5, warmup: int = 1, images: torch.Tensor | None = None) -> dict:
    """Images per second of a forward pass (``train=True``: forward and backward, in training
    mode), the median over ``repeats`` timed passes after ``warmup`` untimed ones
    (:func:`alternate` with one call).

    Returns ``{"images_per_s", "median_s", "times_s"}``. On CUDA the device is synchronised
    around each pass.
    """
    check_input(model, img_size, batch_size)
    x = model_input(model, img_size, batch_size, images)
    with in_mode(model, train):
        times = alternate({"pass": pass_call(model, x, train)}, repeats, warmup,
                          device_sync(x.device))["pass"]
    median = statistics.median(times)
    return {"images_per_s": batch_size / median, "median_s": median, "times_s": times}


# Functions of the clustered cores that are steps of their own, timed by wrapping them for the
# duration of a measurement: (module, function name) -> component.
CLUSTERING_FUNCTIONS = {
    ("ccoat.hashing", "clusters_from_codes"): "clustering",
    ("ccoat.clustering", "limit_clusters"): "clustering",
    ("ccoat.clustering", "prototypes"): "prototypes",
    ("ccoat.clustering", "broadcast"): "broadcast",
}


class _Clock:
    """Exclusive wall-clock time per key over nested regions (modules and functions)."""

    def __init__(self, sync):
        self.sync = sync
        self.stack: list = []  # [key, start, children's time]
        self.spent: dict = defaultdict(float)

    def enter(self, key) -> None:
        self.sync()
        self.stack.append([key, time.perf_counter(), 0.0])

    def exit(self) -> None:
        self.sync()
        key, start, children = self.stack.pop()
        elapsed = time.perf_counter() - start
        self.spent[key] += elapsed - children
        if self.stack:
            self.stack[-1][2] += elapsed

    def wrap(self, fn, component):
        """``fn`` timed as ``component`` of the enclosing module's stage; a call nested in
        another clustering step stays with that step (the cap's merge computes prototypes)."""
        def timed(*args, **kwargs):
            if not self.stack or self.stack[-1][0][0] in set(CLUSTERING_FUNCTIONS.values()):
                return fn(*args, **kwargs)
            self.enter((component, self.stack[-1][0][1]))
            try:
                return fn(*args, **kwargs)
            finally:
                self.exit()
        return timed


@contextlib.contextmanager
def _timed_functions(clock: _Clock):
    patched = []
    for (module_name, name), component in CLUSTERING_FUNCTIONS.items():
        module = importlib.import_module(module_name)
        patched.append((module, name, getattr(module, name)))
        setattr(module, name, clock.wrap(getattr(module, name), component))
    try:
        yield
    finally:
        for module, name, fn in patched:
            setattr(module, name, fn)


def component_times(model: nn.Module, img_size=224, batch_size: int = 1, *, repeats: int = 3,
                    warmup: int = 1, images: torch.Tensor | None = None) -> dict:
    """Wall-clock seconds of one forward pass per ``(component, stage)``, the median over
    ``repeats`` passes after ``warmup``.

    Forward pre- and post-hooks on every module that a component rule names read the clock, and
    so do the clustered cores' step functions (:data:`CLUSTERING_FUNCTIONS`, wrapped for the
    duration); each region's time excludes the regions inside it (a core's time excludes its
    hasher, prototypes and broadcast). What no region covers (residual adds, reshapes, the class
    token's concatenation) is ``("other", stage)``, and the model's own glue
    ``("other", "head")``, so in each pass the parts add up to the whole. On CUDA every region
    synchronises the device, which slows the pass; the split is meant for the CPU, where
    kernels run synchronously anyway. ``("total", "all")`` is the whole pass.
    """
    check_input(model, img_size, batch_size)
    x = model_input(model, img_size, batch_size, images)
    clock = _Clock(device_sync(x.device))

    def pre(key):
        return lambda module, args: clock.enter(key)

    handles = []
    for name, module in model.named_modules():
        key = component_of(name)
        if key is None and re.fullmatch(r"stages\.\d", name):
            key = ("other", STAGES[int(name[-1])])  # the stage itself: its glue
        if key is not None:
            handles += [module.register_forward_pre_hook(pre(key)),
                        module.register_forward_hook(lambda module, args, output: clock.exit())]
    runs = []
    try:
        with in_mode(model, False), torch.no_grad(), _timed_functions(clock):
            for i in range(warmup + repeats):
                clock.spent.clear()
                clock.sync()
                start = time.perf_counter()
                model(x)
                clock.sync()
                total = time.perf_counter() - start
                spent = clock.spent
                # The model's own glue (between stages, the class token read-out) is "other" too.
                spent[("other", "head")] += total - sum(spent.values())
                spent[("total", "all")] = total
                if i >= warmup:
                    runs.append(dict(spent))
    finally:
        for handle in handles:
            handle.remove()
    return {key: statistics.median(run.get(key, 0.0) for run in runs) for key in runs[0]}


