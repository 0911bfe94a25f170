"""Image loading for training and evaluation: the dataset over a manifest, transforms and seeded loaders.

Items are (image [3,H,W] float, target float32 scalar, protected int (-1 where unknown), row index int).
Errors name the manifest, the 1-based row and the file.
"""

from __future__ import annotations

import logging
import random
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from ..core.errors import AimfairError, ImageError
from ..core.manifest import Manifest
from ..core.progress import NULL, Progress

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

log = logging.getLogger(__name__)

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
NO_PROTECTED = -1

MSG_TOO_FEW_TO_TRAIN = ("{label}: {n} image(s) for {world} process(es); training needs at least {need}: BatchNorm "
                        "cannot normalise a batch of one image")
MSG_BATCH_OF_ONE = ("--batch-size {batch}: {per} image(s) per batch for each of {world} processes; training needs at "
                    "least 2 per process (BatchNorm cannot normalise a batch of one image)")
MSG_IMAGE_NOT_FOUND = "{manifest}: row {row}: image not found: {path}"
MSG_IMAGE_UNREADABLE = "{manifest}: row {row}: cannot read image: {path}"

_CHECK_THREADS = 8  # decoding headers is I/O-bound; threads hide file-system latency


def _open_rgb(manifest: Manifest, i: int):
    """Decode row i (0-based) as an RGB PIL image, or raise ImageError naming the row (1-based)."""
    from PIL import Image, UnidentifiedImageError

    path = manifest.image_path(manifest.rows[i])
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise ImageError(MSG_IMAGE_NOT_FOUND.format(manifest=manifest.path, row=i + 1, path=path)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError(MSG_IMAGE_UNREADABLE.format(manifest=manifest.path, row=i + 1, path=path)) from None


class ImageDataset:
    """A map-style torch dataset over a manifest's rows (torch's Dataset needs no base class)."""

    def __init__(self, manifest: Manifest, transform: Callable[[Any], "torch.Tensor"]) -> None:
        self.manifest = manifest
        self.transform = transform

    def __len__(self) -> int:
        return len(self.manifest.rows)

    def __getitem__(self, key: "int | tuple[int, int]") -> tuple["torch.Tensor", "torch.Tensor", int, int]:
        """Item i, or for a key (i, seed) item i with its random augmentation drawn from `seed` alone: then
        the crops depend on neither the worker that loads it nor what was loaded before (resumable)."""
        import torch

        i, seed = key if isinstance(key, tuple) else (key, None)
        row = self.manifest.rows[i]
        if seed is None:
            image = self.transform(_open_rgb(self.manifest, i))  # [3,H,W]
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                image = self.transform(_open_rgb(self.manifest, i))
        target = torch.tensor(float(row["target"]), dtype=torch.float32)  # []
        protected = row.get("protected")
        return image, target, NO_PROTECTED if protected is None else int(protected), i


def _check_one(manifest: Manifest, i: int) -> str | None:
    from PIL import Image

    path = manifest.image_path(manifest.rows[i])
    if not path.is_file():
        return MSG_IMAGE_NOT_FOUND.format(manifest=manifest.path, row=i + 1, path=path)
    try:
        with Image.open(path) as img:
            img.verify()  # header and (for PNG) checksums, without decoding the pixels
    except Exception:
        return MSG_IMAGE_UNREADABLE.format(manifest=manifest.path, row=i + 1, path=path)
    return None


def check_images(manifest: Manifest, *, progress: Progress = NULL) -> None:
    """Fast pre-flight before any training: every image exists and opens. Raises ImageError for the first
    bad row in file order, so a run never dies halfway through an epoch.

    Under torchrun each rank checks every world_size-th row and the ranks then agree on the first bad row, so
    every rank raises the same error (or none) at the same point."""
    from ..core import dist

    rows = range(dist.rank(), len(manifest.rows), dist.world_size())
    chunk = 512
    first: tuple[int, str] | None = None
    with progress.task(f"check {manifest.path.name}", total=len(rows)) as task, ThreadPoolExecutor(_CHECK_THREADS) as pool:
        for start in range(0, len(rows), chunk):
            idx = rows[start : start + chunk]
            for i, message in zip(idx, pool.map(lambda i: _check_one(manifest, i), idx)):
                if message is not None:
                    first = (i, message)
                    break
            if first is not None:
                break
            task.advance(len(idx))
    found = [f for f in dist.all_gather_object(first) if f is not None]
    if found:
        raise ImageError(min(found)[1])


def build_transform(
    image_size: int, *, train: bool, mean: Sequence[float] = MEAN, std: Sequence[float] = STD,
    crop_scale: float = 0.08,
) -> Callable[[Any], "torch.Tensor"]:
    """Train: RandomResizedCrop (keeping crop_scale..100 % of the area; 0.08 is torchvision's default) +
    horizontal flip; eval: plain resize to a square. Both normalise."""
    from torchvision import transforms as T

    if train:
        resize = [T.RandomResizedCrop(image_size, scale=(crop_scale, 1.0)), T.RandomHorizontalFlip()]
    else:
        resize = [T.Resize((image_size, image_size))]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(list(mean), list(std))])


def _seed_worker(worker_id: int) -> None:
    """Each worker's Python/NumPy RNGs follow its torch seed (which the loader's generator fixes)."""
    import numpy as np
    import torch

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class ShardSampler:
    """Every world_size-th index of a dataset of n items, starting at rank: an unpadded shard (shards may differ
    in length by one), so a sum over ranks counts each item exactly once.

    With shuffle, the indices are first permuted with a generator seeded by seed + epoch (`set_epoch`), the same
    permutation on every rank. With a per-rank batch of B / world_size, the ranks' i-th batches together hold
    exactly the images of batch i of one process reading the same order with batch B.
    """

    def __init__(self, n: int, *, rank: int, world_size: int, shuffle: bool = False, seed: int = 0) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.rank, self.n, self.world_size))
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        return iter(order[self.rank :: self.world_size])

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def make_loader(
    dataset: Any,
    *,
    batch_size: int,
    shuffle: bool,
    workers: int,
    seed: int,
    drop_last: bool = False,
    pin_memory: bool = False,
    pad_shards: bool | None = None,
) -> "DataLoader":
    """A DataLoader whose order and augmentations depend only on `seed` (and the worker count).

    `batch_size` is the global batch: under torchrun each rank loads batch_size / world_size images per step
    (`dist.local_batch`) from its own shard. pad_shards (default: when shuffling, i.e. training) uses
    DistributedSampler, which pads the shards to equal length so that every rank takes the same number of steps,
    as DDP needs. Without padding (evaluation, mask gradients) each rank takes every world_size-th image
    (`ShardSampler`), so a sum over ranks counts each image exactly once.
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from ..core import dist

    sampler = None
    per_rank = batch_size
    if dist.is_distributed():
        per_rank = dist.local_batch(batch_size)
        # rank/world size from torchrun's environment: works before the process group is started
        if shuffle if pad_shards is None else pad_shards:
            sampler = DistributedSampler(dataset, num_replicas=dist.world_size(), rank=dist.rank(), shuffle=shuffle,
                                         seed=seed, drop_last=drop_last)
        else:
            sampler = ShardSampler(len(dataset), rank=dist.rank(), world_size=dist.world_size(), shuffle=shuffle,
                                   seed=seed)
        shuffle = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=per_rank,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=generator,
        worker_init_fn=_seed_worker,
        persistent_workers=workers > 0,
    )


def check_trainable(n: int, label: str, batch_size: int | None = None) -> None:
    """Before any work: every batch a training or gradient pass draws holds at least two images on every process
    (a trailing one-image batch is merged into the one before, see EpochSampler), so BatchNorm in training mode
    never sees a batch of one. `label` names the set (`--train data/train.csv`)."""
    from ..core import dist

    world = dist.world_size()
    if batch_size is not None and batch_size // world < 2:
        raise AimfairError(MSG_BATCH_OF_ONE.format(batch=batch_size, per=batch_size // world, world=world))
    if n < 2 * world:
        raise ImageError(MSG_TOO_FEW_TO_TRAIN.format(label=label, n=n, world=world, need=2 * world))


class EpochSampler:
    """The batches of indices one rank reads in an epoch. Shuffled: a permutation seeded by seed + epoch (the
    same on every rank); under torchrun padded to equal shards (as DistributedSampler), so every rank takes the
    same number of steps. With `order`: one fixed pass in that order, unpadded (each image counted once). Either
    way a last single-image batch is merged into the one before (BatchNorm in training mode cannot normalise one
    image); a shard of one image is refused (`check_trainable`). Nothing here keeps state between epochs,
    so epoch k's batches are the same whether or not epochs 1..k-1 ran in this process (resume).

    `keys=True` yields (index, seed) pairs: a per-image augmentation seed from (seed, epoch, index), for
    ImageDataset."""

    def __init__(self, n: int, *, batch_size: int, seed: int, order: Sequence[int] | None = None,
                 keys: bool = False, pool: Sequence[int] | None = None) -> None:
        self.n, self.batch_size, self.seed, self.order, self.keys, self.epoch = n, batch_size, seed, order, keys, 0
        self.pool = None if pool is None else list(pool)  # shuffled: the indices an epoch draws from (may repeat)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        import torch

        from ..core import dist

        rank, world = dist.rank(), dist.world_size()
        if self.order is not None:
            return list(self.order)[rank::world]
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        if self.pool is None:
            order = torch.randperm(self.n, generator=g).tolist()
        else:  # an upsampled epoch (JTT): a permutation of the pool; the pool range(n) draws what no pool draws
            order = [self.pool[i] for i in torch.randperm(len(self.pool), generator=g).tolist()]
        if world > 1:
            total = -(-len(order) // world) * world
            order = (order * -(-total // max(len(order), 1)))[:total]
            return order[rank:total:world]
        return order

    def batches(self) -> list[list[int]]:
        mine = self._indices()
        out = [mine[i:i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
        if len(out) > 1 and len(out[-1]) == 1:
            out[-2].extend(out.pop())
        if len(mine) < 2:
            raise ImageError(MSG_TOO_FEW_TO_TRAIN.format(label="this process's share", n=len(mine), world=1, need=2))
        return out

    def item_seed(self, i: int) -> int:
        return zlib.crc32(f"{self.seed}:{self.epoch}:{i}".encode())

    def __iter__(self):
        for batch in self.batches():
            yield [(i, self.item_seed(i)) for i in batch] if self.keys else batch

    def __len__(self) -> int:
        return len(self.batches())


def make_epoch_loader(dataset: Any, *, batch_size: int, workers: int, seed: int, order: Sequence[int] | None = None,
                      pin_memory: bool = False, pool: Sequence[int] | None = None) -> "DataLoader":
    """A training loader over image files whose order and augmentations depend only on the seed, the epoch
    (`loader.batch_sampler.set_epoch`) and the image: not on the worker count, nor on earlier epochs.
    `batch_size` is the global batch (each rank loads its share). With `order`: one pass in that order."""
    from torch.utils.data import DataLoader

    from ..core import dist

    per_rank = dist.local_batch(batch_size) if dist.is_distributed() else batch_size
    sampler = EpochSampler(len(dataset), batch_size=per_rank, seed=seed, order=order, keys=True, pool=pool)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0)


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell a loader's sampler (EpochSampler, DistributedSampler, a CachedLoader's) which epoch comes next."""
    for name in ("batch_sampler", "sampler"):
        sampler = getattr(loader, name, None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
            return


def row_key(row: dict[str, Any]) -> str:
    """A row's identity for ordering: its file name. Orders built from these keys do not depend on where a
    row sits in its manifest."""
    return str(row["file_name"])


def pass_order(keys: Sequence[str], seed: int | str) -> list[int]:
    """Indices of items with these keys in a seeded random order that depends on the keys and the seed only,
    not on the order the items came in (the keys are sorted before the shuffle)."""
    order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
    random.Random(str(seed)).shuffle(order)
    return order


def _clean(exc: AimfairError) -> AimfairError:
    """Undo DataLoader's re-raise, which puts the worker's whole traceback into the message."""
    text = str(exc)
    if "Traceback" not in text:
        return exc
    last = [line for line in text.splitlines() if line.strip()][-1]
    # last line: "aimfair_cli.core.errors.ImageError: <the original message>"
    return type(exc)(last.split(": ", 1)[1] if ": " in last else last)


def batches(loader: Iterable) -> Iterator:
    """Iterate a loader; an aimfair error raised in a worker comes back with its one-line message."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except AimfairError as exc:
            raise _clean(exc) from None
        yield batch
