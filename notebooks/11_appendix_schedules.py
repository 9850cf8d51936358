# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: learning-rate schedules
#
# Every training run in this book warms its learning rate up and then lowers it along half a
# cosine. This appendix writes both schedules that `ccoat.train` uses by hand, and checks
# them against the code that runs: timm's `CosineLRScheduler` for runs sized in epochs, and
# `ccoat.train.TimeBudgetSchedule` for runs sized in seconds (the equal-time comparisons).
#
# **Prerequisites.** None beyond PyTorch's optimisers.
#
# **Learning objectives**
#
# - write warm-up plus cosine decay by hand and check it against timm;
# - see why a run sized in seconds needs its cosine measured in seconds.

# %% tags=["hide-input"]
# On Colab, install ccoat first (elsewhere the environment already has it).
import sys

CCOAT_REPO = "https://github.com/ccoat-book/ccoat"
if "google.colab" in sys.modules:
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"git+{CCOAT_REPO}"], check=True
    )

# %% tags=["hide-input"]
import ccoat  # first: it quiets a progress-bar warning timm prints in Jupyter

import math

import matplotlib.pyplot as plt
import torch
from timm.scheduler import CosineLRScheduler

from ccoat.plotting import set_theme
from ccoat.prose import glue
from ccoat.train import TimeBudgetSchedule

set_theme()

# %% [markdown]
# ## Warm-up, then cosine
#
# Transformers trained from scratch are fragile in their first updates: the attention
# logits and the LayerNorm statistics are still random, and a full-size step can push them
# somewhere they never recover from. The usual recipe {cite:p}`touvron2021deit` therefore
# *warms up*: the learning rate grows linearly from almost zero over the first updates, then
# decays along half a cosine to a small floor. With peak rate $\eta$, floor $\eta_{min}$,
# starting rate $\eta_0$, $U_w$ warm-up updates and $U_c$ updates after them, update $t$ uses
#
# $$\eta_t = \begin{cases} \eta_0 + (\eta - \eta_0)\, t / U_w & t < U_w \\
#   \eta_{min} + \tfrac12 (\eta - \eta_{min}) \left(1 + \cos\left(\pi \tfrac{t - U_w}{U_c}\right)\right) & t \ge U_w.
# \end{cases}$$


# %%
def warmup_cosine(t, peak, floor, warmup, total, start):
    """The learning rate at update ``t``: warm-up, then cosine down to ``floor``."""
    if t < warmup:
        return start + (peak - start) * t / warmup
    return floor + 0.5 * (peak - floor) * (
        1 + math.cos(math.pi * (t - warmup) / total)
    )


peak, floor, warmup, total = 1e-3, 1e-5, 50, 450
ours = [warmup_cosine(t, peak, floor, warmup, total, peak * 1e-3) for t in range(500)]

# %% [markdown]
# The same schedule from timm, configured as `ccoat.train` configures it (stepped per update):

# %%
optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=peak)
scheduler = CosineLRScheduler(
    optimizer,
    t_initial=total,
    lr_min=floor,
    warmup_t=warmup,
    warmup_lr_init=peak * 1e-3,
    warmup_prefix=True,
    t_in_epochs=False,
)
theirs = []
for t in range(warmup + total):
    scheduler.step_update(num_updates=t)
    theirs.append(optimizer.param_groups[0]["lr"])
torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs))

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(ours, label="by hand")
ax.plot(theirs, "--", label="timm CosineLRScheduler")
ax.set(xlabel="update", ylabel="learning rate", title="Warm-up, then cosine decay")
ax.legend()
plt.show()

# %% [markdown]
# ## A schedule in seconds
#
# Two models given the same *time* make different numbers of updates: a slower model makes
# fewer. A cosine sized in updates would leave the slower model's learning rate high when its
# time runs out, and the comparison would punish it twice. So the equal-time recipe
# (`cifar10-gpu-budget`) warms up over a fixed number of updates and then runs the cosine over
# the *seconds* left in the budget: each model reaches the floor exactly when its budget is
# spent. Here it is for two models, one taking 10 ms and one 16 ms per update, with a 5-second
# budget:


# %%
def seconds_cosine(updates, seconds, peak, floor, warmup, budget, warmup_end):
    """By hand: warm-up in updates, then a cosine over the seconds left after it."""
    if updates < warmup:
        return peak * (1e-3 + (1 - 1e-3) * updates / warmup)
    progress = min((seconds - warmup_end) / (budget - warmup_end), 1.0)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


# %%
fig, ax = plt.subplots(figsize=(6, 3))
for step_s, colour in ((0.010, "C0"), (0.016, "C3")):
    n = int(5.0 / step_s)
    schedule = TimeBudgetSchedule(
        optimizer, peak, floor, budget_s=5.0, warmup_updates=50
    )
    library = []
    for u in range(n + 1):
        schedule.step_update(u, u * step_s)
        library.append(optimizer.param_groups[0]["lr"])
    by_hand = [
        seconds_cosine(u, u * step_s, peak, floor, 50, 5.0, 50 * step_s)
        for u in range(n + 1)
    ]
    torch.testing.assert_close(torch.tensor(library), torch.tensor(by_hand))
    ax.plot(
        [u * step_s for u in range(n + 1)],
        library,
        colour,
        label=f"{step_s * 1e3:.0f} ms per update",
    )
    glue("updates_fast" if step_s < 0.012 else "updates_slow", n)
ax.set(
    xlabel="training time (s)", ylabel="learning rate", title="One budget, two speeds"
)
ax.legend()
plt.show()

# %% [markdown]
# Both curves end at the floor when the five seconds are spent, though the faster model made
# [500](#updates_fast) updates and the slower [312](#updates_slow).
#
# ## Summary
#
# - Warm-up then cosine: by hand it equals timm's `CosineLRScheduler`, which `ccoat.train`
#   uses for runs sized in epochs.
# - A run sized in seconds runs its cosine in seconds (`ccoat.train.TimeBudgetSchedule`), so
#   models of different speeds each finish their schedule with their budget.
#
# ## Exercises
#
# 1. What learning rate does the time schedule give a model that is still mid-warm-up when
#    its budget ends?

# %% tags=["hide-input"]
schedule = TimeBudgetSchedule(optimizer, peak, floor, budget_s=1.0, warmup_updates=50)
schedule.step_update(20, 2.0)  # 20 updates done, already past the budget
mid_warmup = optimizer.param_groups[0]["lr"]
assert mid_warmup == peak * (1e-3 + (1 - 1e-3) * 20 / 50)

# %% [markdown]
# ```{admonition} Solution to exercise 1
# :class: dropdown
# The warm-up's: while fewer than the warm-up's updates are done, the rate climbs with the
# updates, whatever the clock says (after 20 of 50 warm-up updates it is 40% of the peak, plus
# the tiny starting rate). A budget shorter than the warm-up is a mistake in the recipe; the
# run then ends before its learning rate ever falls.
# ```
