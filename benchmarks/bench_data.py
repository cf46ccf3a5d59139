"""Images per second of the data loaders, at 32, 64 and 128 px.

    python benchmarks/bench_data.py [--resolutions 32 64 128] [--batch 256] [--steps 200]
        [--csv benchmarks/results/data.csv] [--md table.md]

Loaders:
  gpu_resident  the whole uint8 dataset on the device; a gather, a random horizontal flip and
                the conversion per step (float and uint8 output)
  torch         TorchLoader on a JPEG image folder: DataLoader workers decode with Pillow
                (--workers, default min(8, cores)), flip and conversion on the device
  dali          DALILoader on the same folder (mixed decode on a GPU, CPU operators without
                one; only where nvidia-dali is installed)

Data: N random uint8 RGB images for gpu_resident (N = 50,000 on a GPU, 5,000 on CPU) and a
folder of --folder-images JPEG files (quality 90) of smooth random content for the streaming
loaders; class-balanced sampling, batch 256. Per row: images/s and the median, p20 and p80 step time over --steps
steps after a warm-up epoch (CUDA events on a GPU, perf_counter on CPU), with the device,
versions and date. Target (issue #5): at least 50k images/s at 32 px on an H100.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import machine, write_outputs  # noqa: E402

from sgan_fast.data import (ArrayDataset, BatchSampler, DALILoader, GPUResidentLoader,  # noqa: E402
                            ImageFolder, TorchLoader)


def make_jpeg_folder(root, n, res, classes=10, seed=0):
    """n JPEG files of smooth random content, res x res, in `classes` class folders."""
    from PIL import Image

    g = np.random.default_rng(seed)
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class_{c:02d}"), exist_ok=True)
    for i in range(n):
        small = g.integers(0, 256, (max(1, res // 8), max(1, res // 8), 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((res, res), Image.BILINEAR)
        img.save(os.path.join(root, f"class_{i % classes:02d}", f"{i:06d}.jpg"), quality=90)
    return ImageFolder(root)


def step_times(loader, steps, gpu):
    it = iter(loader)
    for _ in range(loader.sampler.steps_per_epoch + 5):   # warm-up, across an epoch boundary
        next(it)
    times = []
    for _ in range(steps):
        if gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            next(it)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        else:
            t0 = time.perf_counter()
            next(it)
            times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    return statistics.median(times), times[int(0.2 * (len(times) - 1))], times[int(0.8 * (len(times) - 1))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", nargs="+", type=int, default=[32, 64, 128])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--num-images", type=int, default=None)
    ap.add_argument("--folder-images", type=int, default=None,
                    help="JPEG files for the streaming loaders (default 20,000 on a GPU, 2,000 on CPU)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--loaders", nargs="+", default=["gpu_resident", "torch", "dali"])
    ap.add_argument("--csv", default=os.path.join(os.path.dirname(__file__), "results", "data.csv"))
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    N = args.num_images or (50_000 if gpu else 5_000)
    name, _, date = machine()
    print(f"# data loaders on {name}; torch {torch.__version__}, {date}; N={N}, batch {args.batch}")
    rows = []
    n_folder = args.folder_images or (20_000 if gpu else 2_000)
    try:
        import nvidia.dali  # noqa: F401
        has_dali = True
    except ImportError:
        has_dali = False
        print("  (nvidia-dali not installed: no dali rows)")

    def record(loader_name, output, res, n, med, p20, p80):
        rows.append(dict(loader=loader_name, output=output, resolution=res, batch=args.batch,
                         num_images=n, images_per_s=round(args.batch / (med * 1e-6)),
                         median_us=round(med, 2), p20_us=round(p20, 2), p80_us=round(p80, 2),
                         device=name, torch=torch.__version__, date=date))
        print(f"  {loader_name:<12} {output:<5} {res:>3} px: {rows[-1]['images_per_s']:>10} images/s "
              f"(median {med:.1f} us per batch)", flush=True)

    for res in args.resolutions:
        streaming = [k for k in ("torch", "dali") if k in args.loaders and (k != "dali" or has_dali)]
        if streaming:
            with tempfile.TemporaryDirectory() as root:
                folder = make_jpeg_folder(root, n_folder, res)
                for kind in streaming:
                    sampler = BatchSampler(folder.labels, args.batch, mode="class_balanced", seed=0)
                    if kind == "torch":
                        loader = TorchLoader(folder, sampler, device=device, num_workers=args.workers)
                    else:
                        loader = DALILoader(folder, sampler, resolution=res, device=device,
                                            num_threads=args.workers)
                    record(kind, "float", res, n_folder, *step_times(loader, args.steps, gpu))
                    del loader
        if "gpu_resident" not in args.loaders:
            continue
        g = np.random.default_rng(0)
        ds = ArrayDataset(g.integers(0, 256, (N, res, res, 3), dtype=np.uint8), g.integers(0, 10, N),
                          num_classes=10)
        for output in ("float", "uint8"):
            sampler = BatchSampler(ds.labels, args.batch, mode="class_balanced", seed=0)
            loader = GPUResidentLoader(ds, sampler, device=device, output=output, flip=True)
            record("gpu_resident", output, res, N, *step_times(loader, args.steps, gpu))
            del loader
        del ds
        if gpu:
            torch.cuda.empty_cache()
    head = ["loader", "output", "px", "images/s", "median us", "p20 us", "p80 us"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['loader']} | {r['output']} | {r['resolution']} | {r['images_per_s']} | "
                     f"{r['median_us']} | {r['p20_us']} | {r['p80_us']} |")
    write_outputs(rows, "\n".join(lines) + "\n", args.csv, args.md)


if __name__ == "__main__":
    main()
