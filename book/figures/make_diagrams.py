"""Draw the book's two diagrams as SVG, with every number on them computed here.

- ``coat_lite_pyramid.svg``: CoaT-Lite's four-stage pyramid (the seed's Figure 1), labelled with
  CoaT-Lite Tiny's strides, depths, channels and feature-map sides at 224 px, read from
  ``ccoat.create_model("coat_lite_tiny")`` and ``ccoat.cost.stage_shapes``.
- ``clustering_conv_attention.svg``: the Clustering conv-attention module (the seed's Figure 2),
  each step labelled with its share of the MACs of stage 1's serial blocks at 224 px. The MACs
  are counted by ``ccoat.cost`` (``FlopCounterMode``) on the *trained* Clustering CoaT Tiny
  committed under ``results/``, run on real photos, because the clustered core's cost follows
  the number of clusters its queries form and that number depends on the weights and the image.

``diagrams.json`` beside the SVGs keeps the numbers and how they were made (command, git
commit, date: :func:`ccoat.provenance.provenance`); ``tests/test_figures.py`` checks that the
SVGs print the JSON's numbers. The SVG is written as text, not through matplotlib, so that each
label is one ``<text>`` element a test can find by its ``id``.

Run from the repository root (two to three minutes on two shared CPU cores)::

    PYTHONPATH=$PWD python book/figures/make_diagrams.py            # count and draw
    PYTHONPATH=$PWD python book/figures/make_diagrams.py --redraw   # draw from the JSON
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import torch

import ccoat
from ccoat import cost
from ccoat.data import data_root, sample_photos
from ccoat.provenance import provenance
from ccoat.runfolder import read_run

HERE = Path(__file__).resolve().parent
IMG_SIZE = 224
TRAINED_RUN = "imagenette128_gpu_ccoat_lite_tiny"  # the trained Clustering CoaT Tiny
STAGE = "stage1"
# Steps of the module diagram -> the ccoat.cost components whose MACs they hold. Every MAC of a
# stage-1 block falls in exactly one step (norm and residual have none; patch_embed is the
# stage's, not a block's); module_numbers checks it.
STEPS = {
    "cpe": ("cpe",),
    "qkv": ("qkv",),
    "cluster": ("hashing", "clustering", "prototypes"),
    "attention": ("attention", "broadcast"),
    "crpe": ("crpe",),
    "proj": ("proj",),
    "mlp": ("mlp",),
}
NOT_IN_A_BLOCK = ("patch_embed",)

# Colours: CoaT's own parts in blue, the seed's new step in orange, text near-black.
INK, LINE = "#1f2328", "#57606a"
BLUE, BLUE_DARK, BAND = "#dbe9f7", "#4a7fb5", "#bcd6f0"
ORANGE, ORANGE_DARK = "#fde3c8", "#c8671b"
GREY = "#f2f3f5"


# ---------------------------------------------------------------------------------------------
# The numbers


def pyramid_numbers() -> dict:
    """CoaT-Lite Tiny's stages at ``IMG_SIZE``: stride, depth, channels, heads, side, tokens."""
    model = ccoat.create_model("coat_lite_tiny")
    config = model.config
    stages = [{"stage": i + 1, "stride": sh.patch, "depth": sh.depth, "dim": sh.dim,
               "heads": sh.heads, "side": sh.grid[0], "tokens": sh.image_tokens,
               "mlp_hidden": sh.hidden}
              for i, sh in enumerate(cost.stage_shapes(model, IMG_SIZE))]
    assert [s["dim"] for s in stages] == list(config.embed_dims)
    assert [s["depth"] for s in stages] == list(config.depths)
    assert [s["stride"] for s in stages] == list(config.stage_patches)
    return {"model": "coat_lite_tiny", "img_size": IMG_SIZE, "in_chans": model.in_chans,
            "stages": stages, "num_classes": model.num_classes}


def photos(mean, std) -> tuple[list[torch.Tensor], list[str], str]:
    """One Imagenette validation image per class (the first file of each class folder, already
    224 px) normalised as the run was trained, or, without the data folder, the two sample
    photos. Returns the images ``(1, 3, 224, 224)``, their names, and what they are."""
    import torchvision.transforms as T
    from PIL import Image

    root = data_root()
    val = root / "imagenette" / "val" if root else None
    if val is None or not val.is_dir():
        batch = sample_photos(IMG_SIZE, 2)
        return ([batch[i:i + 1] for i in range(2)], ["china.jpg", "flower.jpg"],
                "scikit-learn's two sample photos, resized to 224 px")
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    images, names = [], []
    for folder in sorted(p for p in val.iterdir() if p.is_dir()):
        path = sorted(folder.iterdir())[0]
        image = Image.open(path).convert("RGB")
        if image.size != (IMG_SIZE, IMG_SIZE):
            raise ValueError(f"expected Imagenette images of {IMG_SIZE}x{IMG_SIZE} px in {val}, "
                             f"got {image.size[0]}x{image.size[1]} for {path.name}")
        images.append(to_tensor(image).unsqueeze(0))
        names.append(f"{folder.name}/{path.name}")
    return images, names, "Imagenette val (224 px), the first image of each class folder"


def module_numbers() -> dict:
    """MACs of stage 1's serial blocks per step of the module, summed over the photos, each
    photo run alone (batch 1) through the trained Clustering CoaT Tiny at ``IMG_SIZE``."""
    run = read_run(TRAINED_RUN)
    if run is None:
        raise FileNotFoundError(f"results/{TRAINED_RUN} is not in this checkout")
    model = run.load_model()
    stage = model.stages[0]
    hasher = stage.blocks[0].attn.core.hasher
    images, names, source = photos(run.run["data"]["mean"], run.run["data"]["std"])
    macs = dict.fromkeys(STEPS, 0)
    clusters, padded = [], []
    for x in images:
        table = cost.audit(model, IMG_SIZE, 1, images=x)
        rows = table[table.stage == STAGE].set_index("component")["macs"]
        steps = {step: int(sum(rows.get(c, 0) for c in comps)) for step, comps in STEPS.items()}
        block_total = int(rows.drop(list(NOT_IN_A_BLOCK), errors="ignore").sum())
        if sum(steps.values()) != block_total:  # a component the diagram does not show
            raise RuntimeError(f"the steps hold {sum(steps.values())} of the block's "
                               f"{block_total} MACs: {rows.to_dict()}")
        macs = {step: macs[step] + steps[step] for step in STEPS}
        blocks = [c for (s, _), c in table.attrs["clusters"].items() if s == STAGE]
        clusters.append(cost.stage_clusters_per_row(table.attrs["clusters"], STAGE))
        padded.append(sum(c.padded / c.rows for c in blocks) / len(blocks))
    total = sum(macs.values())
    return {
        "model": run.run["config"]["model"], "weights": f"results/{TRAINED_RUN}/model.safetensors",
        "trained_at_px": run.run["data"]["img_size"], "img_size": IMG_SIZE, "stage": STAGE,
        "blocks": model.config.depths[0], "dim": model.config.embed_dims[0],
        "heads": model.config.num_heads, "mlp_hidden": stage.blocks[0].mlp.fc1.out_features,
        "cpe_kernel": stage.cpe.proj.kernel_size[0],
        "queries_per_row": cost.stage_shapes(model, IMG_SIZE)[0].image_tokens,
        "n_hashes": hasher.n_hashes, "bucket_width": float(hasher.bucket_width),
        "images": names, "image_source": source,
        "clusters_per_row": sum(clusters) / len(clusters),
        "padded_per_row": sum(padded) / len(padded),
        "macs": macs, "share_percent": {step: 100.0 * m / total for step, m in macs.items()},
        "components": {step: list(comps) for step, comps in STEPS.items()},
        "how": "ccoat.cost.audit(model, 224, 1, images=x) for each image x; the stage-1 rows' "
               "counted MACs summed per step over the images; share = step / all steps",
    }


# ---------------------------------------------------------------------------------------------
# Drawing: a few SVG primitives


class Svg:
    """An SVG document built from rectangles, text lines and arrows, in pixel units."""

    def __init__(self, width: int, height: int, title: str):
        self.width, self.height, self.title, self.parts = width, height, title, []

    def rect(self, x, y, w, h, fill, stroke, rx=6):
        self.parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" '
                          f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>')

    def text(self, x, y, text, size=13, weight="normal", anchor="middle", fill=INK, id=None):
        ident = f' id="{id}"' if id else ""
        self.parts.append(f'<text{ident} x="{x}" y="{y}" font-size="{size}" '
                          f'font-weight="{weight}" text-anchor="{anchor}" fill="{fill}">'
                          f"{escape(text)}</text>")

    def arrow(self, *points, label=None):
        """A polyline through ``points`` ending in an arrowhead; ``label`` beside its start."""
        path = " ".join(f"{x},{y}" for x, y in points)
        self.parts.append(f'<polyline points="{path}" fill="none" stroke="{LINE}" '
                          f'stroke-width="1.6" marker-end="url(#head)"/>')
        if label:
            (x, y), _ = points[0], points[1]
            self.text(x + 6, y + 16, label, size=13, weight="bold", anchor="start")

    def circle(self, x, y, r, text):
        self.parts.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="white" stroke="{LINE}" '
                          f'stroke-width="1.5"/>')
        self.text(x, y + 5, text, size=16, weight="bold")

    def write(self, path: Path) -> None:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
                f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" '
                'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
                f"<title>{escape(self.title)}</title>\n"
                '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                f'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{LINE}"/>'
                "</marker></defs>\n"
                f'<rect width="{self.width}" height="{self.height}" fill="white"/>\n')
        path.write_text(head + "\n".join(self.parts) + "\n</svg>\n", encoding="utf-8")


def box(svg: Svg, x, y, w, h, lines, fill=BLUE, stroke=BLUE_DARK, share=None):
    """A rounded box with ``lines`` of text (the first in bold) and, if given, a ``share``
    ``(step, percent)`` printed bold at its right edge as ``id="share-<step>"``."""
    svg.rect(x, y, w, h, fill, stroke)
    top = y + (h - 18 * len(lines)) / 2 + 14
    for i, line in enumerate(lines):
        svg.text(x + 12, top + 18 * i, line, size=14 if i == 0 else 12.5,
                 weight="bold" if i == 0 else "normal", anchor="start")
    if share is not None:
        step, percent = share
        svg.text(x + w - 12, y + h / 2 + 5, f"{percent:.1f}%", size=15, weight="bold",
                 anchor="end", id=f"share-{step}")


# ---------------------------------------------------------------------------------------------
# The two diagrams


def draw_pyramid(numbers: dict, path: Path) -> None:
    """The image, four stages of shrinking width (patch embedding band over the serial
    blocks), each annotated with its map and channels, then the class token and the head."""
    stages, centre, gap = numbers["stages"], 275, 24
    svg = Svg(760, 470, "CoaT-Lite Tiny at 224 px: four stages, each a patch embedding and "
              "serial blocks, then the class token and the head")
    side = numbers["img_size"]
    box(svg, centre - 130, 10, 260, 40, [f"image {side} × {side} × {numbers['in_chans']}"],
        fill=GREY, stroke=LINE)
    y = 50
    for s, width in zip(stages, (510, 430, 350, 270)):
        svg.arrow((centre, y), (centre, y + gap))
        y += gap
        x = centre - width / 2
        svg.rect(x, y, width, 62, BLUE, BLUE_DARK)
        svg.rect(x, y, width, 24, BAND, BLUE_DARK)
        svg.text(centre, y + 17, f"patch embedding: {s['stride']}×{s['stride']} conv, stride "
                 f"{s['stride']}", size=12.5)
        svg.text(x + 10, y + 48, f"Stage {s['stage']}", size=14, weight="bold", anchor="start")
        svg.text(centre + 28, y + 48, f"{s['depth']} serial blocks", size=13.5)
        svg.text(545, y + 24, f"{s['side']} × {s['side']} map, C = {s['dim']}", size=13.5,
                 weight="bold", anchor="start", id=f"stage{s['stage']}-map")
        svg.text(545, y + 44, f"{s['tokens']:,} tokens + class token", size=12.5,
                 anchor="start")
        y += 62
    svg.arrow((centre, y), (centre, y + gap))
    last = stages[-1]
    box(svg, centre - 230, y + gap, 460, 46,
        ["stage 4's class token → LayerNorm → head",
         f"Linear({last['dim']} → {numbers['num_classes']} classes)"], fill=GREY, stroke=LINE)
    heads = sorted({s["heads"] for s in stages})
    svg.text(545, 404, f"{'/'.join(map(str, heads))} heads in every stage;", size=12,
             anchor="start")
    ratios = [f"{s['mlp_hidden'] // s['dim']}C" for s in stages]
    svg.text(545, 420, f"MLP width {', '.join(ratios)}", size=12, anchor="start")
    svg.text(545, 436, "(stages 1 to 4)", size=12, anchor="start")
    svg.write(path)


def draw_module(n: dict, path: Path) -> None:
    """Input, CPE, q/k/v, then clustering and prototype attention (the seed's, in orange) beside
    CRPE, their sum, the output projection, and the rest of the block; each with its share."""
    share = n["share_percent"]
    c_h = n["dim"] // n["heads"]
    svg = Svg(760, 630, "The Clustering conv-attention module, each step with its share of the "
              "MACs of stage 1's serial blocks (trained Clustering CoaT Tiny, 224 px)")
    box(svg, 60, 10, 400, 44, [f"input x: N = 1 + {n['queries_per_row']:,} tokens, "
                               f"C = {n['dim']}"], fill=GREY, stroke=LINE)
    svg.rect(490, 14, 18, 14, ORANGE, ORANGE_DARK, rx=3)
    svg.text(514, 26, "new in Clustering CoaT", size=12, anchor="start")
    svg.text(490, 46, "%: share of the block's MACs", size=12, anchor="start")
    svg.arrow((260, 54), (260, 76))
    w = n["cpe_kernel"]
    box(svg, 20, 76, 720, 50, [f"1  CPE: x ← x + DWConv{w}×{w}(x)",
                               "conv position encoding"], share=("cpe", share["cpe"]))
    svg.arrow((260, 126), (260, 148))
    box(svg, 20, 148, 720, 50, ["2  q, k, v = Linear(x)",
                                f"C → 3C, then {n['heads']} heads of Cₕ = {c_h} channels"],
        share=("qkv", share["qkv"]))
    svg.arrow((160, 198), (160, 252), label="q")
    svg.arrow((400, 198), (400, 372), label="k")
    svg.arrow((470, 198), (470, 372), label="v")
    svg.arrow((630, 198), (630, 252), label="q, v")
    box(svg, 20, 252, 350, 90,
        ["3  cluster the queries by E2LSH",
         f"{n['n_hashes']} hashes, bucket width r = {n['bucket_width']:g}",
         f"≈ {n['clusters_per_row']:,.0f} clusters of {n['queries_per_row']:,} queries a head",
         "prototypes P = each cluster's mean"],
        fill=ORANGE, stroke=ORANGE_DARK, share=("cluster", share["cluster"]))
    box(svg, 540, 252, 200, 90, ["5  CRPE", "q ⊙ DWConv(v)", "(conv rel. position)"],
        share=("crpe", share["crpe"]))
    svg.arrow((160, 342), (160, 372), label="P")
    box(svg, 20, 372, 500, 62, ["4  prototype attention softmax(P kᵀ / √Cₕ) v",
                                "broadcast back to every member of its cluster"],
        fill=ORANGE, stroke=ORANGE_DARK, share=("attention", share["attention"]))
    svg.arrow((270, 434), (270, 470), (366, 470))
    svg.arrow((640, 342), (640, 470), (394, 470))
    svg.circle(380, 470, 14, "+")
    svg.arrow((380, 484), (380, 510))
    box(svg, 20, 510, 720, 44, ["output projection Linear(C → C)"],
        share=("proj", share["proj"]))
    ratio = n["mlp_hidden"] // n["dim"]
    box(svg, 20, 572, 720, 50, [f"rest of the serial block: MLP (C → {ratio}C → C)",
                                "LayerNorms and residual adds (no MACs)"],
        fill=GREY, stroke=LINE, share=("mlp", share["mlp"]))
    svg.write(path)


def main(argv: list[str]) -> None:
    """Compute the numbers and draw; with ``--redraw``, draw again from ``diagrams.json``
    (to change the drawing without counting again)."""
    if argv not in ([], ["--redraw"]):
        raise SystemExit(f"usage: make_diagrams.py [--redraw], got {' '.join(argv)}")
    if argv:
        numbers = json.loads((HERE / "diagrams.json").read_text())
    else:
        torch.manual_seed(0)
        record = provenance(command="PYTHONPATH=$PWD python book/figures/make_diagrams.py")
        numbers = {"provenance": record, "pyramid": pyramid_numbers(),
                   "module": module_numbers()}
        numbers["provenance"]["dataset"] = numbers["module"]["image_source"]
        (HERE / "diagrams.json").write_text(json.dumps(numbers, indent=1) + "\n")
    draw_pyramid(numbers["pyramid"], HERE / "coat_lite_pyramid.svg")
    draw_module(numbers["module"], HERE / "clustering_conv_attention.svg")
    shares = ", ".join(f"{k} {v:.1f}%" for k, v in numbers["module"]["share_percent"].items())
    print(f"wrote {HERE}/coat_lite_pyramid.svg, clustering_conv_attention.svg, diagrams.json\n"
          f"stage-1 shares: {shares}")


if __name__ == "__main__":
    main(sys.argv[1:])
