"""The fast data path: images decoded once, cropped/flipped/normalised in batches with the PIL path's
distribution, seeded, invalidated when a file changes, and falling back to the files when too large."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from aimfair_cli.core.errors import ImageError
from aimfair_cli.core.manifest import read_manifest, write_manifest
from aimfair_cli.training import tensorcache
from aimfair_cli.training.images import MEAN, STD, set_epoch
from aimfair_cli.training.tensorcache import (CachedLoader, augment, cache_size, crop_boxes, load, make_train_loader,
                                              training_loader)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_cache():
    tensorcache.clear()
    yield
    tensorcache.clear()


def make_manifest(folder, n=12, size=(24, 20), name="m.csv", ext="png"):
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    sizes = size if isinstance(size, list) else [size] * n
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.{ext}")
        rows.append({"file_name": f"img/{i}.{ext}", "target": i % 2, "protected": (i // 2) % 2})
    return read_manifest(write_manifest(folder / name, rows))


def _torchvision_boxes(n, height, width, scale, seed=0):
    torch.manual_seed(seed)
    img = torch.zeros(3, height, width)
    out = []
    for _ in range(n):
        i, j, h, w = T.RandomResizedCrop.get_params(img, scale=list(scale), ratio=[3 / 4, 4 / 3])
        out.append((j, i, j + w, i + h))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("height,width,scale", [(64, 64, (0.6, 1.0)), (218, 178, (0.08, 1.0)), (20, 200, (0.5, 1.0))])
def test_crop_boxes_follow_torchvision_distribution(height, width, scale):
    n = 20000
    ours = crop_boxes(n, height, width, scale=scale, generator=torch.Generator().manual_seed(1)).double()
    ref = _torchvision_boxes(n, height, width, scale)
    for boxes in (ours, ref):  # every box inside the image
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()

    def stats(b):
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        whole = ((w == width) & (h == height)).double()
        return {"area": (w * h / (width * height)), "log_ratio": torch.log(w / h), "cx": cx / width,
                "cy": cy / height, "whole": whole}

    a, b = stats(ours), stats(ref)
    for key in a:
        # means and spreads agree within a few standard errors of 20000 draws
        se = math.sqrt((a[key].var() + b[key].var()) / n) + 1e-9
        assert abs(a[key].mean() - b[key].mean()) < 5 * se + 1e-3, key
        if key != "whole":  # a rare 0/1 event: its spread follows from its mean
            assert abs(a[key].std() - b[key].std()) < 0.02 * b[key].std() + 1e-3, key


def test_an_impossible_crop_falls_back_to_the_centre_like_torchvision():
    # A 10x200 strip: no crop of ratio 3/4..4/3 with area share >= 0.5 fits, so every draw is the fallback
    ours = crop_boxes(50, 10, 200, scale=(0.5, 1.0), generator=torch.Generator().manual_seed(0))
    ref = _torchvision_boxes(50, 10, 200, (0.5, 1.0))
    assert torch.equal(ours.double(), ref)


def test_resize_is_bilinear_with_pixel_centres_when_enlarging():
    img = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    # full-image boxes with scale (1, 1) on a square crop: ratio 1 only fits the whole of a square image
    square = img[:, :, :, :20]
    out = augment(square, size=40, scale=(1.0, 1.0), mean=MEAN, std=STD, generator=g)
    ref = F.interpolate(square.float(), size=(40, 40), mode="bilinear", align_corners=False)
    ref = (ref / 255 - 0.5) / 0.5
    # each image either as is or flipped
    for k in range(2):
        assert (torch.allclose(out[k], ref[k], atol=1e-4) or torch.allclose(out[k], ref[k].flip(2), atol=1e-4))


def test_shrinking_averages_instead_of_aliasing():
    # a one-pixel checkerboard shrunk 4x: bilinear point sampling would keep the extremes, an antialiased
    # resize gives the mean grey
    board = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 255).to(torch.uint8)
    img = board.expand(1, 3, 64, 64).contiguous()
    out = augment(img, size=16, scale=(1.0, 1.0), mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255),
                  generator=torch.Generator().manual_seed(0))
    assert abs(out.mean().item() - 127.5) < 1 and out.std().item() < 20


def test_flips_are_half_and_values_normalised(tmp_path):
    img = torch.randint(0, 256, (4000, 3, 8, 8), dtype=torch.uint8)
    img[:, :, :, :4] = 0  # left half black, right half white: a flip moves the white half to the left
    img[:, :, :, 4:] = 255
    out = augment(img, size=8, scale=(1.0, 1.0), mean=MEAN, std=STD, generator=torch.Generator().manual_seed(0))
    assert out.min() >= -1 and out.max() <= 1
    flipped = (out[:, 0, 4, 0] > 0).double().mean().item()
    assert 0.46 < flipped < 0.54


def test_cached_images_equal_the_decoded_files(tmp_path):
    m = make_manifest(tmp_path)
    cached = load(m, image_size=16, device=CPU)
    first = np.asarray(Image.open(tmp_path / "img/3.png").convert("RGB")).transpose(2, 0, 1)
    assert cached.images.shape == (12, 3, 20, 24) and cached.images.dtype == torch.uint8
    assert torch.equal(cached.images[3], torch.from_numpy(first.copy()))
    assert cached.targets.tolist() == [float(i % 2) for i in range(12)]
    assert cached.protected.tolist() == [(i // 2) % 2 for i in range(12)]


def test_cache_size_takes_the_common_size_and_shrinks_large_images():
    assert cache_size([(178, 218)] * 3 + [(100, 100)], 224) == (178, 218)
    assert cache_size([(512, 512)] * 2, 224) == (448, 448)
    assert cache_size([(1024, 512)], 64) == (256, 128)


def test_mixed_sizes_are_resized_to_one(tmp_path):
    m = make_manifest(tmp_path, size=[(24, 20)] * 5 + [(40, 40)])
    assert load(m, image_size=16, device=CPU).images.shape == (6, 3, 20, 24)


def test_unchanged_files_are_decoded_once_and_a_changed_file_again(tmp_path):
    m = make_manifest(tmp_path)
    a = load(m, image_size=16, device=CPU)
    assert load(m, image_size=16, device=CPU) is a  # same files: the same tensor, no decoding
    path = tmp_path / "img/5.png"
    Image.fromarray(np.full((20, 24, 3), 7, dtype=np.uint8)).save(path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    b = load(m, image_size=16, device=CPU)
    assert b is not a and int(b.images[5].max()) == 7 and torch.equal(b.images[4], a.images[4])


def test_a_corrupt_or_missing_image_is_one_line_naming_the_row(tmp_path):
    m = make_manifest(tmp_path)
    (tmp_path / "img/2.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"m\.csv: row 3: cannot read image"):
        load(m, image_size=16, device=CPU)
    (tmp_path / "img/2.png").unlink()
    with pytest.raises(ImageError, match=r"m\.csv: row 3: image not found"):
        load(m, image_size=16, device=CPU)


def test_too_large_for_memory_reads_the_files(tmp_path, monkeypatch):
    m = make_manifest(tmp_path)
    assert training_loader(m, image_size=16, crop_scale=0.5, mean=MEAN, std=STD, batch_size=4, seed=0, device=CPU,
                           budget=100) is None
    monkeypatch.setattr(tensorcache, "free_memory", lambda device: 100)
    loader = make_train_loader(m, cache=True, image_size=16, crop_scale=0.5, mean=MEAN, std=STD, batch_size=4, seed=0,
                               workers=0, device=CPU)
    assert isinstance(loader, DataLoader)
    monkeypatch.undo()
    loader = make_train_loader(m, cache=True, image_size=16, crop_scale=0.5, mean=MEAN, std=STD, batch_size=4, seed=0,
                               workers=0, device=CPU)
    assert isinstance(loader, CachedLoader)
    assert isinstance(make_train_loader(m, cache=False, image_size=16, crop_scale=0.5, mean=MEAN, std=STD,
                                        batch_size=4, seed=0, workers=0, device=CPU), DataLoader)


def _epoch(loader, epoch):
    set_epoch(loader, epoch)
    return [tuple(t.clone() for t in b) for b in loader]


def test_batches_follow_the_seed_and_epoch(tmp_path):
    m = make_manifest(tmp_path, n=10)
    kw = dict(image_size=16, crop_scale=0.5, mean=MEAN, std=STD, batch_size=4, device=CPU)
    a, b, c = (training_loader(m, seed=s, **kw) for s in (0, 0, 1))
    ea, eb, ec = _epoch(a, 1), _epoch(b, 1), _epoch(c, 1)
    assert len(a) == 3 and [len(x[3]) for x in ea] == [4, 4, 2]
    assert sorted(torch.cat([x[3] for x in ea]).tolist()) == list(range(10))  # every image once per epoch
    assert all(torch.equal(x, y) for bx, by in zip(ea, eb) for x, y in zip(bx, by))  # same seed: same batches
    assert not torch.equal(ea[0][0], ec[0][0])
    e2 = _epoch(a, 2)
    assert not torch.equal(ea[0][0], e2[0][0])  # each epoch its own order and crops
    images, targets, protected, idx = ea[0]
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert targets.tolist() == [float(i % 2) for i in idx.tolist()]
    assert protected.tolist() == [(i // 2) % 2 for i in idx.tolist()]


def test_a_fixed_order_is_one_pass_in_that_order(tmp_path):
    m = make_manifest(tmp_path, n=9)
    order = [8, 1, 7, 2, 6, 3, 5, 4, 0]
    loader = training_loader(m, image_size=16, crop_scale=0.5, mean=MEAN, std=STD, batch_size=4, seed=0, device=CPU,
                             order=order)
    seen = [x[3].tolist() for x in loader]
    assert seen == [[8, 1, 7, 2], [6, 3, 5, 4, 0]]  # a last single image joins the batch before (BatchNorm)
