"""Pack Imagenette resized for a lent GPU machine, where only the checkout travels (64 MiB).

    python benchmarks/pack_imagenette.py [--img-size 146] [--quality 80] [--val-subset 1000]
        [--src ../shared/data/imagenette] [--out data] [--name imagenette146]

``--src`` is any ImageFolder copy of Imagenette (torchvision's download:
``DATA/imagenette2-320``). Every image is resized (shorter side to ``--img-size``, bilinear with
antialiasing: the first step of ``ccoat.data.build_transforms``' evaluation at
``img_size = round(0.875 * --img-size)``, 128 px for 146), cut to its central square (a split held
on the device needs one size) and stored as a JPEG, in the ImageFolder layout
``imagenette/{train,val}/<wnid>/``; the tree is written as one gzipped tar (gzip squeezes out
the tar headers' padding; the JPEGs do not compress further), ``OUT/NAME.tar.gz``
(``data/imagenette146.tar.gz``): 51 MiB at the defaults. Unpack
it into a folder ``ROOT`` and train with ``--data imagenette --data-dir ROOT
--data-on-device``: the split then lives on the GPU, random-resized-cropped and flipped there,
and the val images are centre-cropped as the CPU evaluation does. ``--val-subset N`` keeps the
fixed random subset that ``ccoat.data.subset(val, N, seed=0)`` chooses (0: all 3,925), so the
per-epoch val curve costs less of the carried size; score the final weights on the whole val
split afterwards (``python -m ccoat.train --eval-only``).
"""

import argparse
import io
import tarfile
import time
from pathlib import Path

from torchvision import transforms as T

from ccoat import data as cdata
from ccoat.provenance import output_folder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--src", default="../shared/data/imagenette")
    p.add_argument("--img-size", type=cdata.parse_img_size, default=146, metavar="N",
                   help="the stored images' side (146: a 128-px model's evaluation resize, "
                        "round(128 / 0.875))")
    p.add_argument("--quality", type=int, default=80)
    p.add_argument("--val-subset", type=int, default=1000)
    p.add_argument("--out", type=output_folder, default="data", help="the folder of the pack")
    p.add_argument("--name", help="the pack's stem: OUT/NAME.tar.gz (default imagenette<img-size>)")
    args = p.parse_args(argv)
    if args.name is None:
        args.name = f"imagenette{args.img_size}"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    src = Path(args.src)
    if not (src / "train").is_dir() or not (src / "val").is_dir():
        raise SystemExit(f"error: {src} holds no train/ and val/ folders (an ImageFolder copy of "
                         f"Imagenette, as ../shared/data/imagenette)")
    # shorter side, bilinear and antialiased (as build_transforms), then the central square (the
    # shared copy is square already; torchvision's imagenette2-320 is not, and a split held on
    # the device needs one size)
    resize = T.Compose([T.Resize(args.img_size), T.CenterCrop(args.img_size)])
    splits = {"train": cdata.CheckedImageFolder(src / "train")}
    splits["val"] = cdata.subset(cdata.CheckedImageFolder(src / "val"), args.val_subset or None,
                                 seed=0)
    out = Path(args.out) / f"{args.name}.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    start, n, size = time.perf_counter(), 0, 0
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for dataset in splits.values():
            base = dataset.dataset if hasattr(dataset, "indices") else dataset
            indices = dataset.indices if hasattr(dataset, "indices") else range(len(dataset))
            for i in indices:
                path, _ = base.samples[i]
                buffer = io.BytesIO()
                resize(cdata.read_image(path)).save(buffer, "JPEG", quality=args.quality)
                rel = Path(path).relative_to(src)
                info = tarfile.TarInfo(f"imagenette/{rel}")
                info.size, info.mtime = buffer.tell(), 0
                buffer.seek(0)
                tar.addfile(info, buffer)
                n, size = n + 1, size + info.size
    tmp.rename(out)
    print(f"{n} images ({len(splits['train'])} train, {len(splits['val'])} val) at "
          f"{args.img_size} px, quality {args.quality}: {out} {out.stat().st_size / 2**20:.1f} "
          f"MiB in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
