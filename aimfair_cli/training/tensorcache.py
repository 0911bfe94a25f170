"""The fast data path for training passes: images decoded once into a uint8 tensor, augmented in batches.

Training (`pretrain`, `finetune`) and the mask's gradient passes read every image many times with a random
crop and flip. Decoding a JPEG/PNG with PIL for every read costs about as much as the network's forward and
backward pass on two CPU cores, and starves a GPU. Here the images are decoded once (threads) into one
[N,3,H,W] uint8 tensor at a fixed size, kept on the training device, and each batch is augmented there:

- RandomResizedCrop with torchvision's sampling rule (area share uniform in [crop_scale, 1], log aspect ratio
  uniform in [log 3/4, log 4/3], ten tries, then a centre crop), drawn per image from a seeded generator;
- the crops are resized with `torchvision.ops.roi_align` (bilinear, pixel centres as `align_corners=False`,
  averaging ceil(crop/output) samples per output pixel when shrinking, i.e. an antialiased resize) in one call;
- a horizontal flip with probability 1/2, then normalisation.

The cache size is the images' own size when they share one (CelebA aligned: 178×218), else the most common
size; images larger than twice the training size are shrunk (antialiased) so that their shorter side is twice
the training size. Decoded tensors are kept in memory for the life of the process, keyed by the image files'
paths, sizes and modification times, so the three gradient passes of `mask`, or the many runs of `aimfair demo`,
decode each image once; a changed file is decoded again. When the cache would need more than half of the free
memory of the device, the caller falls back to reading files.

Order and augmentation depend only on the seed, the epoch and the rank: the same seed gives the same weights
on the same machine. The draws differ from the PIL path's (another generator, and roi_align's bilinear
filter instead of PIL's), the distribution is the same.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..core import dist
from ..core.errors import ImageError
from ..core.manifest import Manifest
from ..core.progress import NULL, Progress
from .images import MSG_IMAGE_NOT_FOUND, MSG_IMAGE_UNREADABLE, NO_PROTECTED, EpochSampler

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SHRINK_ABOVE = 2  # images whose shorter side exceeds this many times the training size are shrunk to it
MEMORY_SHARE = 0.5  # at most this share of the device's free memory goes to the cache
_DECODE_THREADS = min(16, os.cpu_count() or 1)
_KEEP = 4  # decoded sets kept in memory (LRU): the mask's three passes plus one
_RATIO = (3 / 4, 4 / 3)
_TRIES = 10

_memo: "OrderedDict[tuple, CachedImages]" = OrderedDict()


@dataclass
class CachedImages:
    """A manifest's images as one uint8 tensor [N,3,H,W] with their labels, on one device."""

    images: "torch.Tensor"  # [N,3,H,W] uint8
    targets: "torch.Tensor"  # [N] float32
    protected: "torch.Tensor"  # [N] int64, NO_PROTECTED where unknown

    def __len__(self) -> int:
        return int(self.images.shape[0])


def files_fingerprint(manifest: Manifest) -> tuple:
    """Paths, sizes and modification times of every image: a changed or replaced file changes the key."""
    parts = []
    for i, row in enumerate(manifest.rows):
        path = manifest.image_path(row)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ImageError(MSG_IMAGE_NOT_FOUND.format(manifest=manifest.path, row=i + 1, path=path)) from None
        parts.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(parts)


def _header_size(manifest: Manifest, i: int) -> tuple[int, int]:
    from PIL import Image

    path = manifest.image_path(manifest.rows[i])
    try:
        with Image.open(path) as img:
            return img.size  # (W, H)
    except Exception:
        raise ImageError(MSG_IMAGE_UNREADABLE.format(manifest=manifest.path, row=i + 1, path=path)) from None


def cache_size(sizes: Sequence[tuple[int, int]], image_size: int) -> tuple[int, int]:
    """(W, H) every image is stored at: the most common size, shrunk so that its shorter side is at most
    SHRINK_ABOVE × image_size (keeping its aspect ratio)."""
    (w, h), _ = Counter(sizes).most_common(1)[0]
    limit = SHRINK_ABOVE * image_size
    if min(w, h) > limit:
        f = limit / min(w, h)
        w, h = max(1, round(w * f)), max(1, round(h * f))
    return w, h


def _decode(manifest: Manifest, i: int, size: tuple[int, int]):
    import numpy as np
    from PIL import Image

    path = manifest.image_path(manifest.rows[i])
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != size:
                img = img.resize(size, Image.BILINEAR)  # PIL filters (antialiases) when shrinking
            return np.asarray(img).transpose(2, 0, 1)  # [3,H,W] uint8
    except FileNotFoundError:
        raise ImageError(MSG_IMAGE_NOT_FOUND.format(manifest=manifest.path, row=i + 1, path=path)) from None
    except (OSError, ValueError, SyntaxError):
        raise ImageError(MSG_IMAGE_UNREADABLE.format(manifest=manifest.path, row=i + 1, path=path)) from None


def free_memory(device: "torch.device") -> int:
    """Bytes the cache may take on `device`: MEMORY_SHARE of what is free (CUDA) or available (CPU)."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_SHARE)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * MEMORY_SHARE)
    except OSError:
        pass
    return 4 << 30


def load(manifest: Manifest, *, image_size: int, device: "torch.device", progress: Progress = NULL,
         budget: int | None = None) -> CachedImages | None:
    """The manifest's images decoded at the cache size onto `device`, or None when they would take more than
    `budget` bytes (default: MEMORY_SHARE of the free memory). Reused from memory when every file is unchanged."""
    import numpy as np
    import torch

    key = (files_fingerprint(manifest), image_size, str(device))
    hit = _memo.get(key)
    if hit is not None:
        _memo.move_to_end(key)
        return hit
    n = len(manifest.rows)
    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        sizes = list(pool.map(lambda i: _header_size(manifest, i), range(n)))
        w, h = cache_size(sizes, image_size)
        need = n * 3 * w * h
        limit = free_memory(device) if budget is None else budget
        if need > limit:
            log.info("image cache: %d images at %dx%d need %.1f GB, more than the %.1f GB allowed; reading files",
                     n, w, h, need / 1e9, limit / 1e9)
            return None
        images = torch.empty((n, 3, h, w), dtype=torch.uint8)
        with progress.task(f"decode {manifest.path.name}", total=n) as task:
            for start in range(0, n, 256):
                idx = range(start, min(n, start + 256))
                for i, arr in zip(idx, pool.map(lambda i: _decode(manifest, i, (w, h)), idx)):
                    images[i] = torch.from_numpy(np.ascontiguousarray(arr))
                task.advance(len(idx))
    targets = torch.tensor([float(r["target"]) for r in manifest.rows], dtype=torch.float32)
    protected = torch.tensor([NO_PROTECTED if r.get("protected") is None else int(r["protected"])
                              for r in manifest.rows], dtype=torch.int64)
    cached = CachedImages(images.to(device), targets.to(device), protected.to(device))
    log.info("image cache: %d images of %s decoded at %dx%d (%.0f MB on %s)", n, manifest.path.name, w, h,
             need / 1e6, device)
    _memo[key] = cached
    while len(_memo) > _KEEP:
        _memo.popitem(last=False)
    return cached


def clear() -> None:
    """Forget every decoded set (tests; freeing device memory)."""
    _memo.clear()


def crop_boxes(n: int, height: int, width: int, *, scale: tuple[float, float],
               generator: "torch.Generator") -> "torch.Tensor":
    """n RandomResizedCrop boxes [n,4] (x1, y1, x2, y2 in pixels, float) with torchvision's sampling rule:
    up to ten tries of (area share, log aspect ratio) per image, the first that fits; otherwise the whole image
    clamped to the ratio range, centred."""
    import torch

    area = height * width
    shares = torch.empty(n, _TRIES).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n, _TRIES).uniform_(math.log(_RATIO[0]), math.log(_RATIO[1]), generator=generator)
    ratio = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * shares * ratio))
    h = torch.round(torch.sqrt(area * shares / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.int(), dim=1)  # the first try that fits (0 when none does)
    ok = fits.any(dim=1)
    rows = torch.arange(n)
    w, h = w[rows, first], h[rows, first]
    # offsets: uniform integers in [0, W - w] and [0, H - h], as random.randint draws them
    u = torch.rand(n, 2, generator=generator)
    x1 = torch.floor(u[:, 0] * (width - w + 1)).clamp(max=width - w)
    y1 = torch.floor(u[:, 1] * (height - h + 1)).clamp(max=height - h)
    # fallback: the whole image cut to the nearest allowed ratio, centred
    in_ratio = width / height
    if in_ratio < _RATIO[0]:
        fw, fh = width, round(width / _RATIO[0])
    elif in_ratio > _RATIO[1]:
        fw, fh = round(height * _RATIO[1]), height
    else:
        fw, fh = width, height
    fx, fy = (width - fw) // 2, (height - fh) // 2
    x1 = torch.where(ok, x1, torch.full_like(x1, fx))
    y1 = torch.where(ok, y1, torch.full_like(y1, fy))
    w = torch.where(ok, w, torch.full_like(w, fw))
    h = torch.where(ok, h, torch.full_like(h, fh))
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def augment(images: "torch.Tensor", *, size: int, scale: tuple[float, float], mean: Sequence[float],
            std: Sequence[float], generator: "torch.Generator") -> "torch.Tensor":
    """A batch of uint8 images [B,3,H,W] -> random resized crops, flipped half the time, normalised:
    float32 [B,3,size,size] on the images' device. Random draws come from `generator` (a CPU generator)."""
    import torch
    from torchvision.ops import roi_align

    b, _, height, width = images.shape
    boxes = crop_boxes(b, height, width, scale=scale, generator=generator)  # [B,4]
    flip = torch.rand(b, generator=generator) < 0.5  # [B]
    device = images.device
    rois = torch.cat([torch.arange(b, dtype=torch.float32)[:, None], boxes], dim=1).to(device)  # [B,5]
    out = roi_align(images.float(), rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1,
                    aligned=True)  # [B,3,size,size], 0..255
    flip = flip.to(device)
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    m = torch.tensor([255.0 * v for v in mean], device=device).view(1, 3, 1, 1)
    s = torch.tensor([255.0 * v for v in std], device=device).view(1, 3, 1, 1)
    return (out - m) / s


def _generator(seed: int) -> "torch.Generator":
    import torch

    g = torch.Generator()
    g.manual_seed(seed & 0x7FFFFFFFFFFFFFFF)
    return g


class CachedLoader:
    """Batches (images, targets, protected, row index) from a CachedImages with the training augmentation,
    as the DataLoader over files yields them; `sampler.set_epoch` gives each epoch its own order and crops."""

    def __init__(self, cached: CachedImages, *, image_size: int, crop_scale: float, mean: Sequence[float],
                 std: Sequence[float], batch_size: int, seed: int, order: Sequence[int] | None = None,
                 pool: Sequence[int] | None = None) -> None:
        self.cached, self.image_size = cached, image_size
        self.scale = (crop_scale, 1.0)
        self.mean, self.std, self.seed = tuple(mean), tuple(std), seed
        per_rank = dist.local_batch(batch_size) if dist.is_distributed() else batch_size
        self.sampler = EpochSampler(len(cached), batch_size=per_rank, seed=seed, order=order, pool=pool)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]]:
        import torch

        # crops and flips: one generator per (seed, epoch, rank), independent of the order's generator
        g = _generator(zlib.crc32(f"{self.seed}:{self.sampler.epoch}:{dist.rank()}:augment".encode()))
        device = self.cached.images.device
        for batch in self.sampler.batches():
            idx = torch.tensor(batch, dtype=torch.int64)
            on_device = idx.to(device)
            images = augment(self.cached.images.index_select(0, on_device), size=self.image_size, scale=self.scale,
                             mean=self.mean, std=self.std, generator=g)
            yield (images, self.cached.targets.index_select(0, on_device),
                   self.cached.protected.index_select(0, on_device), idx)


def training_loader(manifest: Manifest, *, image_size: int, crop_scale: float, mean: Sequence[float],
                    std: Sequence[float], batch_size: int, seed: int, device: "torch.device",
                    order: Sequence[int] | None = None, progress: Progress = NULL,
                    budget: int | None = None, pool: Sequence[int] | None = None) -> CachedLoader | None:
    """A CachedLoader over the manifest, or None when its images do not fit in memory (read files then)."""
    cached = load(manifest, image_size=image_size, device=device, progress=progress, budget=budget)
    if cached is None:
        return None
    return CachedLoader(cached, image_size=image_size, crop_scale=crop_scale, mean=mean, std=std,
                        batch_size=batch_size, seed=seed, order=order, pool=pool)


def make_train_loader(manifest: Manifest, *, cache: bool, image_size: int, crop_scale: float, mean: Sequence[float],
                      std: Sequence[float], batch_size: int, seed: int, workers: int, device: "torch.device",
                      order: Sequence[int] | None = None, progress: Progress = NULL,
                      pool: Sequence[int] | None = None) -> Any:
    """The loader of a training pass (shuffled each epoch) or, with `order`, of one pass in that order (the
    mask's gradients): from the decoded-image cache when `cache` and the images fit, else from the files
    (PIL, `workers` processes, the same augmentation distribution). `pool`: the row indices a shuffled epoch
    draws from, repeats allowed (upsampling; default every row once)."""
    from .images import ImageDataset, build_transform, make_epoch_loader

    if cache:
        loader = training_loader(manifest, image_size=image_size, crop_scale=crop_scale, mean=mean, std=std,
                                 batch_size=batch_size, seed=seed, device=device, order=order, progress=progress,
                                 pool=pool)
        if loader is not None:
            return loader
    dataset = ImageDataset(manifest, build_transform(image_size, train=True, mean=mean, std=std, crop_scale=crop_scale))
    return make_epoch_loader(dataset, batch_size=batch_size, workers=workers, seed=seed, order=order,
                             pin_memory=device.type == "cuda", pool=pool)
