"""The model factory, ImageNet weights (offline: from a fake cache file or failing fast), devices and blocks."""

from pathlib import Path

import pytest
import torch

from aimfair_cli.core.errors import CheckpointError, UsageError
from aimfair_cli.training import models
from aimfair_cli.training.checkpoint import initial_model, save_checkpoint
from aimfair_cli.training.models import (
    MSG_BAD_DEVICE,
    MSG_BAD_WEIGHTS,
    MSG_IMAGENET_BAD_FILE,
    MSG_IMAGENET_BAD_HASH,
    MSG_NO_CUDA,
    PARAM_BLOCKS,
    block_of,
    build_model,
    imagenet_cache_path,
    resolve_device,
)


def test_resnet18_with_one_logit():
    torch.manual_seed(0)
    m = build_model()
    assert isinstance(m.fc, torch.nn.Linear) and (m.fc.in_features, m.fc.out_features) == (512, 1)
    assert len(list(m.parameters())) == 62  # DESIGN.md: 62 parameter tensors
    m.eval()
    with torch.no_grad():
        assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


def test_same_seed_same_init():
    torch.manual_seed(3)
    a = build_model()
    torch.manual_seed(3)
    b = build_model()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_blocks():
    m = build_model()
    blocks = {block_of(n) for n, _ in m.named_parameters()}
    assert blocks == set(PARAM_BLOCKS)
    assert block_of("conv1.weight") == block_of("bn1.bias") == "stem"
    assert block_of("layer3.1.bn2.running_mean") == "layer3"
    assert block_of("module.fc.weight") == "fc"  # DDP prefix
    with pytest.raises(UsageError):
        block_of("head.weight")


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", ""):
        with pytest.raises(UsageError) as e:
            resolve_device(bad)
        assert str(e.value) == MSG_BAD_DEVICE.format(spec=bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda():
    with pytest.raises(UsageError) as e:
        resolve_device("cuda")
    assert str(e.value) == MSG_NO_CUDA.format(spec="cuda")


def test_weights_from_checkpoint(tmp_path):
    torch.manual_seed(1)
    src = build_model()
    path = save_checkpoint(tmp_path / "a.safetensors", src, {"image_size": 32})
    m = initial_model(str(path))
    assert torch.equal(m.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
    for build in (build_model, lambda weights: initial_model(weights)):
        with pytest.raises(UsageError) as e:
            build(weights="resnet50")
        assert str(e.value) == MSG_BAD_WEIGHTS.format(weights="resnet50")
    with pytest.raises(CheckpointError):
        initial_model(str(tmp_path / "missing.safetensors"))


def _named_by_hash(tmp_path, monkeypatch, payload: bytes) -> "Path":
    """Point the ImageNet URL at a file name carrying payload's SHA-256 prefix (as torchvision names its files)
    and return where the torch cache expects that file. Nothing is downloaded."""
    import hashlib

    prefix = hashlib.sha256(payload).hexdigest()[:8]
    monkeypatch.setitem(models.IMAGENET_URLS, "resnet18", f"http://127.0.0.1:9/resnet18-{prefix}.pth")
    path = imagenet_cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_imagenet_from_the_torch_cache_checked_by_its_hash(tmp_path, monkeypatch):
    import io

    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert imagenet_cache_path() == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    torch.manual_seed(2)
    fake = torchvision.models.resnet18(weights=None)  # stands in for the real file
    buf = io.BytesIO()
    torch.save(fake.state_dict(), buf)
    path = _named_by_hash(tmp_path, monkeypatch, buf.getvalue())
    path.write_bytes(buf.getvalue())
    m = build_model(weights="imagenet")
    assert torch.equal(m.conv1.weight, fake.conv1.weight)
    assert torch.equal(m.layer4[1].bn2.running_var, fake.layer4[1].bn2.running_var)
    assert m.fc.out_features == 1


def test_imagenet_file_with_another_hash_is_refused(tmp_path, monkeypatch):
    import hashlib

    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = imagenet_cache_path()  # the real name, resnet18-f37072fd.pth, holding other weights
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    got = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    with pytest.raises(CheckpointError) as e:
        build_model(weights="imagenet")
    assert str(e.value) == MSG_IMAGENET_BAD_HASH.format(path=path, got=got, want="f37072fd",
                                                        url=models.IMAGENET_URLS["resnet18"])


def test_imagenet_bad_download_is_deleted(tmp_path, monkeypatch):
    """A download whose hash does not match its name is refused and removed (a real local HTTP server)."""
    import http.server
    import threading

    payload = b"x" * 1000

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        url = f"http://127.0.0.1:{server.server_port}/resnet18-f37072fd.pth"
        monkeypatch.setitem(models.IMAGENET_URLS, "resnet18", url)
        with pytest.raises(CheckpointError) as e:
            build_model(weights="imagenet")
    finally:
        server.shutdown()
    import hashlib

    dest = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(e.value) == MSG_IMAGENET_BAD_HASH.format(path=dest, got=hashlib.sha256(payload).hexdigest()[:8],
                                                        want="f37072fd", url=url)
    assert not dest.exists()


def test_imagenet_unreachable_fails_fast_with_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # port 9 on localhost: connection refused at once; the real URL is never contacted in tests
    monkeypatch.setitem(models.IMAGENET_URLS, "resnet18", "http://127.0.0.1:9/resnet18-f37072fd.pth")
    with pytest.raises(CheckpointError) as e:
        build_model(weights="imagenet")
    msg = str(e.value)
    dest = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert msg.startswith("ImageNet weights for resnet18 are not in the torch cache and could not be downloaded (")
    assert msg.endswith(f"download http://127.0.0.1:9/resnet18-f37072fd.pth and put it at {dest} "
                        "(or pass --weights none for random initialisation)")
    assert not dest.exists() and not list(dest.parent.glob("*"))  # no partial download left


def test_imagenet_corrupt_cache_file(tmp_path, monkeypatch):
    """A file whose hash matches its name but that torch cannot read (weights_only refuses anything else)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = _named_by_hash(tmp_path, monkeypatch, b"not a checkpoint")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        build_model(weights="imagenet")
    assert str(e.value).startswith(f"{path}: cannot load ImageNet weights (")
    assert str(e.value).endswith(MSG_IMAGENET_BAD_FILE.split(")", 1)[1].format(url=models.IMAGENET_URLS["resnet18"]))
