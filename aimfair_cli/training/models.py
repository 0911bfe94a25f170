"""The classifier: torchvision ResNet-18 with one logit, its initial weights, and the device to run on.

Parameter tensors are grouped into blocks (stem, layer1..layer4, fc) for the sub-tuning baselines and the
mask summary. torch/torchvision are imported inside the functions so `aimfair --help` stays light.
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import CheckpointError, UsageError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ARCHS = ("resnet18",)
WEIGHTS_CHOICES = ("none", "imagenet")  # or a path to an aimfair .safetensors checkpoint
PARAM_BLOCKS = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")
_STEM = ("conv1", "bn1")

# torchvision's IMAGENET1K_V1 file for ResNet-18. Its name carries the first hex digits of the file's SHA-256
# (torch.hub's naming convention `name-<sha256 prefix>.ext`), which is what the file is verified against.
IMAGENET_URLS = {"resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth"}
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")
DOWNLOAD_TIMEOUT_S = 10.0  # connect/read timeout: an unreachable network fails in seconds, never hangs

MSG_UNKNOWN_ARCH = "unknown architecture '{arch}' (known: {known})"
MSG_BAD_WEIGHTS = "--weights must be none, imagenet or a .safetensors checkpoint; got '{weights}'"
MSG_WEIGHTS_NOT_FOUND = "weights file not found: {path}"
MSG_IMAGENET_UNAVAILABLE = (
    "ImageNet weights for {arch} are not in the torch cache and could not be downloaded ({reason}); "
    "download {url} and put it at {path} (or pass --weights none for random initialisation)"
)
MSG_IMAGENET_BAD_HASH = (
    "{path}: SHA-256 starts with {got}, not {want} as its name says (a truncated or different file); "
    "delete it and download {url} again"
)
MSG_IMAGENET_BAD_FILE = "{path}: cannot load ImageNet weights ({reason}); delete it and download {url} again"
MSG_BAD_DEVICE = "unknown device '{spec}' (use auto, cpu, cuda or cuda:N)"
MSG_NO_CUDA = "device '{spec}' requested but CUDA is not available (use --device cpu or auto)"
MSG_RANK_DEVICE = (
    "under torchrun each process uses its own GPU, cuda:LOCAL_RANK; pass --device cuda or auto, not '{spec}'"
)
MSG_RANK_NO_GPU = "process {local_rank} on this node has no GPU of its own ({count} visible); start at most {count} per node"
MSG_UNKNOWN_PARAM = "parameter '{name}' does not belong to a known block ({blocks})"


def block_of(param_name: str) -> str:
    """Block of a parameter/buffer name: conv1/bn1 -> "stem", layerN.* -> "layerN", fc.* -> "fc".

    A DistributedDataParallel "module." prefix is ignored.
    """
    name = param_name.removeprefix("module.")
    head = name.split(".", 1)[0]
    if head in _STEM:
        return "stem"
    if head in PARAM_BLOCKS:
        return head
    raise UsageError(MSG_UNKNOWN_PARAM.format(name=param_name, blocks=", ".join(PARAM_BLOCKS)))


def resolve_device(spec: str = "auto") -> "torch.device":
    """"auto" -> CUDA if available, else CPU. Under torchrun, "auto"/"cuda" mean this process's GPU."""
    import torch

    from ..core import dist

    spec = str(spec).strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2]
        if index and not index.isdigit():
            raise UsageError(MSG_BAD_DEVICE.format(spec=spec))
        if not torch.cuda.is_available():
            raise UsageError(MSG_NO_CUDA.format(spec=spec))
        if index and dist.is_distributed():
            raise UsageError(MSG_RANK_DEVICE.format(spec=spec))  # two ranks on one GPU: NCCL refuses
        if not index and dist.is_distributed():
            if dist.local_rank() >= torch.cuda.device_count():
                raise UsageError(MSG_RANK_NO_GPU.format(local_rank=dist.local_rank(),
                                                        count=torch.cuda.device_count()))
            index = str(dist.local_rank())
        if not index:
            index = str(torch.cuda.current_device())
        if int(index) >= torch.cuda.device_count():
            raise UsageError(MSG_NO_CUDA.format(spec=spec))
        return torch.device(f"cuda:{index}")
    raise UsageError(MSG_BAD_DEVICE.format(spec=spec))


def _resnet(arch: str, num_classes: int) -> "torch.nn.Module":
    import torchvision

    if arch not in ARCHS:
        raise UsageError(MSG_UNKNOWN_ARCH.format(arch=arch, known=", ".join(ARCHS)))
    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)


def imagenet_cache_path(arch: str = "resnet18") -> Path:
    """Where torchvision keeps the ImageNet file: $TORCH_HOME/hub/checkpoints/<file name>."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_URLS[arch].rsplit("/", 1)[1]


def _download(url: str, dest: Path, *, timeout: float) -> None:
    """Fetch `url` to `dest` atomically, with a timeout (torch.hub's downloader has none)."""
    from ..core.fsio import atomic_open

    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_open(dest, "wb") as fh:
        while chunk := resp.read(1 << 20):
            fh.write(chunk)


_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime) of files already hashed in this process


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verify_hash(path: Path, url: str) -> None:
    """Check the file against the SHA-256 prefix in its name, as torch.hub does with check_hash=True."""
    m = _HASH_IN_NAME.search(path.name)
    if m is None:
        return
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    want = m.group(1)
    got = _sha256(path)
    if not got.startswith(want):
        raise CheckpointError(MSG_IMAGENET_BAD_HASH.format(path=path, got=got[:len(want)], want=want, url=url))
    _VERIFIED.add(key)


def ensure_imagenet_weights(arch: str = "resnet18") -> Path:
    """The verified ImageNet file in the torch cache, downloaded first if missing. Raises CheckpointError
    within seconds, saying where to put the file, when it is missing and cannot be downloaded. Stages call it
    before reading any data, so an offline run fails at once."""
    if arch not in IMAGENET_URLS:
        raise UsageError(MSG_UNKNOWN_ARCH.format(arch=arch, known=", ".join(ARCHS)))
    url, path = IMAGENET_URLS[arch], imagenet_cache_path(arch)
    if not path.is_file():
        log.info("downloading ImageNet weights for %s to %s", arch, path)
        try:
            _download(url, path, timeout=DOWNLOAD_TIMEOUT_S)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc.__class__.__name__
            raise CheckpointError(MSG_IMAGENET_UNAVAILABLE.format(arch=arch, reason=reason, url=url, path=path)) from exc
        try:
            _verify_hash(path, url)
        except CheckpointError:
            path.unlink(missing_ok=True)  # never leave a bad download where the next run would find it
            raise
    _verify_hash(path, url)
    return path


def _imagenet_state(arch: str) -> dict:
    import torch

    url, path = IMAGENET_URLS[arch], ensure_imagenet_weights(arch)
    try:
        # weights_only: a tensors-only unpickler, never arbitrary objects.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which and how to fix it
        raise CheckpointError(MSG_IMAGENET_BAD_FILE.format(path=path, reason=exc.__class__.__name__, url=url)) from exc


def build_model(*, weights: str = "none", arch: str = "resnet18") -> "torch.nn.Module":
    """ResNet-18 whose fc is replaced by one logit.

    weights: "none" (random init; the caller seeds it) or "imagenet" (torchvision's IMAGENET1K_V1 backbone,
    fresh fc). Starting from an aimfair checkpoint is `checkpoint.initial_model`: this module never reads
    checkpoints, so checkpoint.py can build models without an import loop.
    """
    import torch

    weights = str(weights)
    if weights == "none":
        return _resnet(arch, num_classes=1)
    if weights != "imagenet":
        raise UsageError(MSG_BAD_WEIGHTS.format(weights=weights))
    model = _resnet(arch, num_classes=1000)
    state = _imagenet_state(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        path = imagenet_cache_path(arch)
        raise CheckpointError(
            MSG_IMAGENET_BAD_FILE.format(path=path, reason="tensor names or shapes differ", url=IMAGENET_URLS[arch])
        ) from exc
    model.fc = torch.nn.Linear(model.fc.in_features, 1)  # 512 -> 1 logit
    return model
