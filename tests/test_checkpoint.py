"""Checkpoints: safetensors round trip with metadata; anything else (pickles above all) refused unread."""

import json
import pathlib
import pickle

import pytest
import torch

from aimfair_cli.core.errors import CheckpointError
from aimfair_cli.training.checkpoint import (
    FORMAT_VERSION,
    MSG_MISMATCH,
    MSG_NO_META,
    MSG_NOT_FOUND,
    MSG_NOT_SAFETENSORS,
    REQUIRED_META,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from aimfair_cli.training.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model()
    # non-default BN buffers, so the round trip proves they are stored
    for name, buf in m.named_buffers():
        if name.endswith("running_mean"):
            buf.normal_()
        elif name.endswith("num_batches_tracked"):
            buf.fill_(7)
    return m


def test_round_trip_keeps_every_tensor_and_the_metadata(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model,
                           {"image_size": 32, "target": "Smiling", "config": {"lr": 0.01}, "best_val_acc": 0.9})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left behind
    loaded, meta = load_checkpoint(path)
    want, got = model.state_dict(), loaded.state_dict()
    assert list(want) == list(got)
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert got["bn1.num_batches_tracked"].item() == 7
    assert not loaded.training
    assert set(REQUIRED_META) <= set(meta)
    assert meta["format"] == FORMAT_VERSION
    assert (meta["arch"], meta["image_size"], meta["target"], meta["protected"]) == ("resnet18", 32, "Smiling", None)
    assert meta["mean"] == meta["std"] == [0.5, 0.5, 0.5]
    assert meta["config"] == {"lr": 0.01} and meta["best_val_acc"] == 0.9
    assert read_meta(path) == meta


def test_channels_last_model_saves(tmp_path, model):
    m = build_model().to(memory_format=torch.channels_last)
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "cl.safetensors", m, {"image_size": 32}))
    assert torch.equal(loaded.conv1.weight, m.conv1.weight)


class _Boobytrap:
    """Unpickling this creates a marker file: proof that a loader ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("name", ["evil.pt", "evil.safetensors"])
def test_pickle_is_refused_and_never_unpickled(tmp_path, name):
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"conv1.weight": _Boobytrap(marker)}))
    for fn in (load_checkpoint, read_meta):
        with pytest.raises(CheckpointError) as e:
            fn(path)
        assert str(e.value) == MSG_NOT_SAFETENSORS.format(path=path)
    assert not marker.exists()


def test_torch_save_zip_is_refused(tmp_path, model):
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == MSG_NOT_SAFETENSORS.format(path=path)


@pytest.mark.parametrize("content", [b"", b"short", b"\xff" * 64, (20).to_bytes(8, "little") + b"[1, 2, 3]" + b" " * 20])
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        read_meta(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "nope.safetensors")
    assert str(e.value) == MSG_NOT_FOUND.format(path=tmp_path / "nope.safetensors")


def test_foreign_safetensors_without_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == MSG_NO_META.format(path=path)


def test_tensors_that_do_not_fit_the_arch(tmp_path, model):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "fc.bias"}
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path), metadata={"aimfair": json.dumps({"format": 1, "arch": "resnet18", "image_size": 32})})
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(MSG_MISMATCH.format(path=path, arch="resnet18", detail=""))
    assert "fc.bias" in str(e.value)
