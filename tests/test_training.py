"""Image loading and the training phases: partial updates, BN modes, checkpoint choice, reproducibility."""

import numpy as np
import pytest
import torch
from PIL import Image

from aimfair_cli.core.errors import ImageError, UsageError
from aimfair_cli.core.manifest import read_manifest, write_manifest
from aimfair_cli.training import loop as training
from aimfair_cli.training.images import (
    MSG_IMAGE_NOT_FOUND,
    MSG_IMAGE_UNREADABLE,
    ImageDataset,
    batches,
    build_transform,
    check_images,
    make_loader,
)
from aimfair_cli.training.loop import OptimConfig, Predictions, fit, predict, seed_everything, train_one_epoch
from aimfair_cli.training.models import build_model

SIZE = 32


def make_images(folder, n, *, seed=0, name="m.csv", size=SIZE):
    """n small PNGs whose colour follows the label (red-ish = 1, blue-ish = 0), brightness the protected value."""
    rng = np.random.default_rng(seed)
    rows = []
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        y, s = i % 2, (i // 2) % 2
        base = np.array([190, 50, 50] if y else [50, 50, 190], float) + 40 * s
        Image.fromarray(np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)).save(
            folder / "img" / f"{i}.png")
        rows.append({"file_name": f"img/{i}.png", "target": y, "protected": s})
    return read_manifest(write_manifest(folder / name, rows))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    manifest = make_images(folder, 16)
    ds_train = ImageDataset(manifest, build_transform(SIZE, train=True))
    ds_val = ImageDataset(manifest, build_transform(SIZE, train=False))
    return manifest, ds_train, ds_val


def _loaders(data, seed=0):
    _, ds_train, ds_val = data
    return (make_loader(ds_train, batch_size=8, shuffle=True, workers=0, seed=seed),
            make_loader(ds_val, batch_size=8, shuffle=False, workers=0, seed=seed))


def test_dataset_items(data):
    manifest, ds_train, ds_val = data
    image, target, protected, index = ds_val[3]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert -1.0 <= image.min() and image.max() <= 1.0  # normalised with mean = std = 0.5
    assert target.dtype == torch.float32 and target.shape == () and target.item() == 1.0
    assert (protected, index) == (1, 3)
    assert ds_train[0][0].shape == (3, SIZE, SIZE)


def test_unknown_protected_is_minus_one(tmp_path):
    m = make_images(tmp_path, 2)
    m.rows[0]["protected"] = None
    assert ImageDataset(m, build_transform(SIZE, train=False))[0][2] == -1


def test_missing_and_corrupt_images(tmp_path):
    m = make_images(tmp_path, 4)
    (tmp_path / "img" / "1.png").unlink()
    (tmp_path / "img" / "2.png").write_bytes(b"\x89PNG garbage")
    ds = ImageDataset(m, build_transform(SIZE, train=False))
    with pytest.raises(ImageError) as e:
        ds[1]
    assert str(e.value) == MSG_IMAGE_NOT_FOUND.format(manifest=m.path, row=2, path=tmp_path / "img" / "1.png")
    with pytest.raises(ImageError) as e:
        ds[2]
    assert str(e.value) == MSG_IMAGE_UNREADABLE.format(manifest=m.path, row=3, path=tmp_path / "img" / "2.png")
    with pytest.raises(ImageError) as e:
        check_images(m)  # the first bad row in file order
    assert str(e.value) == MSG_IMAGE_NOT_FOUND.format(manifest=m.path, row=2, path=tmp_path / "img" / "1.png")
    (tmp_path / "img" / "1.png").write_bytes((tmp_path / "img" / "0.png").read_bytes())
    with pytest.raises(ImageError) as e:
        check_images(m)
    assert str(e.value) == MSG_IMAGE_UNREADABLE.format(manifest=m.path, row=3, path=tmp_path / "img" / "2.png")


def test_worker_errors_come_back_as_one_line(tmp_path):
    m = make_images(tmp_path, 2)
    (tmp_path / "img" / "1.png").unlink()
    loader = make_loader(ImageDataset(m, build_transform(SIZE, train=False)), batch_size=2, shuffle=False,
                         workers=1, seed=0)
    with pytest.raises(ImageError) as e:
        list(batches(loader))
    assert str(e.value) == MSG_IMAGE_NOT_FOUND.format(manifest=m.path, row=2, path=tmp_path / "img" / "1.png")


def test_loader_order_follows_the_seed(data):
    def order(seed):
        return [i for *_, idx in _loaders(data, seed)[0] for i in idx.tolist()]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == list(range(16))


def test_train_one_epoch_and_predict(data):
    seed_everything(0)
    model = build_model()
    train_loader, val_loader = _loaders(data)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stats = train_one_epoch(model, train_loader, opt, device="cpu", amp=False)
    assert set(stats) == {"loss", "acc", "n"} and stats["n"] == 16 and stats["loss"] > 0 and 0 <= stats["acc"] <= 1
    p = predict(model, val_loader, device="cpu")
    assert isinstance(p, Predictions)
    assert p.indices.tolist() == list(range(16))
    assert p.targets.tolist() == [i % 2 for i in range(16)]
    assert p.protected.tolist() == [(i // 2) % 2 for i in range(16)]
    assert ((0 <= p.scores) & (p.scores <= 1)).all()
    assert p.preds.tolist() == (p.scores > 0.5).astype(int).tolist()


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


TRAINABLE = {"fc.weight", "fc.bias", "layer4.1.bn2.weight", "layer4.1.bn2.bias"}


@pytest.mark.parametrize("bn", ["update", "freeze"])
def test_partial_fit_leaves_other_tensors_bit_identical(data, bn):
    seed_everything(0)
    model = build_model()
    before = _snapshot(model)
    result = fit(model, *_loaders(data), optim=OptimConfig(lr=0.1, epochs=1), device="cpu", trainable=TRAINABLE,
                 bn=bn, restore_best=False)
    after = _snapshot(model)
    params = {n for n, _ in model.named_parameters()}
    for name in params - TRAINABLE:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert not torch.equal(before["layer4.1.bn2.running_mean"], after["layer4.1.bn2.running_mean"])  # trainable BN
    frozen_stats = ("bn1.running_mean", "layer1.0.bn1.running_var", "layer4.1.bn1.num_batches_tracked")
    for name in frozen_stats:
        assert torch.equal(before[name], after[name]) == (bn == "freeze"), name
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert set(result.best_state) == set(before)
    assert all(v.device.type == "cpu" for v in result.best_state.values())


def test_fit_rejects_bad_options(data):
    model = build_model()
    with pytest.raises(UsageError, match="--bn must be one of update, freeze; got 'thaw'"):
        fit(model, *_loaders(data), optim=OptimConfig(lr=0.1, epochs=1), device="cpu", bn="thaw")
    with pytest.raises(UsageError, match="not in the model: head.weight"):
        fit(model, *_loaders(data), optim=OptimConfig(lr=0.1, epochs=1), device="cpu", trainable={"head.weight"})
    with pytest.raises(UsageError, match="nothing to fine-tune"):
        fit(model, *_loaders(data), optim=OptimConfig(lr=0.1, epochs=1), device="cpu", trainable=set())


def test_ties_keep_the_earlier_epoch_and_lr_steps(data, monkeypatch):
    n = 16
    const = Predictions(scores=np.full(n, 0.9, np.float32), targets=np.arange(n) % 2, protected=np.zeros(n, int),
                        indices=np.arange(n))
    monkeypatch.setattr(training, "predict", lambda *a, **k: const)  # val accuracy 0.5 every epoch
    seed_everything(0)
    result = fit(build_model(), *_loaders(data), optim=OptimConfig(lr=0.1, epochs=3, milestones=(2,)), device="cpu",
                 trainable={"fc.weight", "fc.bias"})
    assert result.best_epoch == 1 and result.best_val_acc == 0.5
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.1, 0.01])


def test_best_state_is_loaded_back(data, monkeypatch):
    accs = iter([0.5, 0.75, 0.625])
    n = 16

    def fake_predict(*a, **k):
        acc = next(accs)
        correct = int(acc * n)
        scores = np.where(np.arange(n) < correct, (np.arange(n) % 2) * 0.8 + 0.1, 1 - ((np.arange(n) % 2) * 0.8 + 0.1))
        return Predictions(scores=scores.astype(np.float32), targets=np.arange(n) % 2, protected=np.zeros(n, int),
                           indices=np.arange(n))

    monkeypatch.setattr(training, "predict", fake_predict)
    seed_everything(0)
    model = build_model()
    result = fit(model, *_loaders(data), optim=OptimConfig(lr=0.1, epochs=3), device="cpu", trainable={"fc.bias"})
    assert (result.best_epoch, result.best_val_acc) == (2, 0.75)
    assert torch.equal(model.fc.bias, result.best_state["fc.bias"])
    assert result.history[2]["val_acc"] == 0.625


@pytest.mark.slow
def test_same_seed_same_weights(data):
    def run():
        seed_everything(5)
        model = build_model()
        return fit(model, *_loaders(data, seed=5), optim=OptimConfig(lr=0.05, epochs=2), device="cpu").best_state

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_in_order_loaders_shard_without_padding_under_torchrun(monkeypatch):
    # 10 items over 3 ranks: DistributedSampler would pad to 12 and count two images twice in a mean gradient.
    monkeypatch.setenv("WORLD_SIZE", "3")
    seen = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        loader = make_loader(list(range(10)), batch_size=6, shuffle=False, workers=0, seed=0)
        seen.append([i for batch in loader for i in batch.tolist()])
        shuffled = make_loader(list(range(10)), batch_size=6, shuffle=True, workers=0, seed=0)
        assert len(shuffled.sampler) == 4  # training keeps equal, padded shards: every rank takes the same steps
        assert loader.batch_size == 2  # --batch-size is the global batch: each of the 3 ranks loads a third
    assert seen == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
