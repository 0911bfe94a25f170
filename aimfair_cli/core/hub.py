"""Where a model comes from: a local folder, the Hugging Face cache, or the Hub — decided without ever hanging
on a missing network. Shared by the diffusers generator and the transformers prompt writer."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import dist
from .errors import AimfairError, GeneratorError, UsageError

log = logging.getLogger(__name__)

HUB_TIMEOUT_S = 5.0  # how long to wait for the Hub before deciding there is no network

MSG_BAD_DEVICE = "device '{device}' is not available here (torch sees no {kind})"
MSG_NOT_A_FOLDER = "model folder not found: {model}"
MSG_NOT_PIPELINE_FOLDER = "{path} is not a {what} folder (no {marker})"
MSG_OFFLINE_NOT_CACHED = (
    "model '{model}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: download it on a machine "
    "with network (`hf download {model}`) or pass a local folder"
)
MSG_HUB_UNREACHABLE = (
    "model '{model}' is not in the local Hugging Face cache and the Hub cannot be reached: pre-download it "
    "(`hf download {model}`) and set HF_HUB_OFFLINE=1, or pass a local folder"
)
MSG_NOT_ON_HUB = "model '{model}' was not found on the Hugging Face Hub (private repos need `hf auth login` or HF_TOKEN)"
MSG_GATED = "model '{model}' is gated on the Hugging Face Hub: accept its licence on the model page and log in (`hf auth login`)"
MSG_NO_MARKER_ON_HUB = "model '{model}' on the Hugging Face Hub has no {marker}: it is not a {what}"


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from, and whether from_pretrained may touch the network."""

    name_or_path: str
    where: str  # "folder", "cache" or "hub"
    local_files_only: bool
    revision: str | None = None  # the Hub commit, when known


MSG_PICKLE_ONLY = ("{path} holds only pickle weights ({found}), which aimfair never loads: it needs "
                   "{expected} (save the model with save_pretrained(..., safe_serialization=True))")
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def require_safetensors(folder: str | os.PathLike, *, expected: str, error: type[Exception]) -> None:
    """Before loading: a local model folder whose weights are only pickles (pytorch_model.bin) is refused in one
    line naming the safetensors file expected (torch's own refusal is a page of text, and pickles run code)."""
    from pathlib import Path

    root = Path(folder)
    if not root.is_dir() or any(root.rglob("*.safetensors")) or any(root.rglob("*.safetensors.index.json")):
        return
    pickles = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in _PICKLES)
    if pickles:
        raise error(MSG_PICKLE_ONLY.format(path=folder, found=", ".join(pickles[:3]), expected=expected))


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now rather than when huggingface_hub was imported."""
    from huggingface_hub import constants

    env = any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(constants.HF_HUB_OFFLINE)


def _snapshot_commit(cached_file: str) -> str | None:
    # .../models--org--name/snapshots/<commit>/<marker>
    parts = Path(cached_file).parts
    return parts[-2] if len(parts) >= 2 else None


def _probe_hub(repo_id: str, marker: str, timeout: float) -> tuple[str, str | None]:
    """Ask the Hub whether `repo_id` has `marker`: ("ok", commit), ("gated"|"missing"|"no-marker", None) or
    ("unreachable", None).

    Runs in a daemon thread with a hard deadline, because a name lookup on a machine without network can
    block longer than any socket timeout.
    """
    result: list[tuple[str, str | None]] = []

    def ask() -> None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

        try:
            meta = get_hf_file_metadata(hf_hub_url(repo_id, marker), timeout=timeout)
            result.append(("ok", meta.commit_hash))
        except GatedRepoError:
            result.append(("gated", None))
        except RepositoryNotFoundError:
            result.append(("missing", None))
        except EntryNotFoundError:
            result.append(("no-marker", None))
        except HfHubHTTPError as exc:  # 5xx and friends: the Hub is there but not answering usefully
            log.debug("Hub check for %s failed: %s", repo_id, exc)
            result.append(("unreachable", None))
        except Exception as exc:  # connection refused, DNS failure, timeout, proxy errors, ...
            log.debug("Hub check for %s failed: %s", repo_id, exc)
            result.append(("unreachable", None))

    thread = threading.Thread(target=ask, name="aimfair-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return result[0] if result else ("unreachable", None)


def locate_model(
    model: str,
    *,
    marker: str,
    what: str,
    error: type[AimfairError] = GeneratorError,
    timeout: float = HUB_TIMEOUT_S,
) -> ModelSource:
    """Decide where `model` (a local folder or a Hub id) loads from, failing fast with one clear line.

    `marker` is the file every such model has (model_index.json for a diffusers pipeline, config.json for a
    transformers model). Order: an existing folder; with HF_HUB_OFFLINE the cache only; otherwise a short Hub
    check, falling back to the cache when the Hub cannot be reached.
    """
    path = Path(model).expanduser()
    if path.exists():
        if not (path / marker).is_file():
            raise error(MSG_NOT_PIPELINE_FOLDER.format(path=path, what=what, marker=marker))
        return ModelSource(str(path), "folder", local_files_only=True)
    if not _REPO_ID.match(model):
        raise error(MSG_NOT_A_FOLDER.format(model=model))

    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, marker)
    cached = cached if isinstance(cached, str) else None
    if hub_offline():
        if cached:
            return ModelSource(model, "cache", local_files_only=True, revision=_snapshot_commit(cached))
        raise error(MSG_OFFLINE_NOT_CACHED.format(model=model))

    status, commit = _probe_hub(model, marker, timeout)
    if status == "ok":
        return ModelSource(model, "hub", local_files_only=False, revision=commit)
    if status == "unreachable":
        if cached:
            log.info("the Hub cannot be reached; loading %s from the local cache", model)
            return ModelSource(model, "cache", local_files_only=True, revision=_snapshot_commit(cached))
        raise error(MSG_HUB_UNREACHABLE.format(model=model))
    messages = {"gated": MSG_GATED, "missing": MSG_NOT_ON_HUB, "no-marker": MSG_NO_MARKER_ON_HUB}
    raise error(messages[status].format(model=model, marker=marker, what=what))


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message, for one-line errors."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return exc.__class__.__name__


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide the tqdm bars diffusers/transformers draw while loading weights (ours are drawn by rich)."""
    restore = []
    for module in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            mod = __import__(module, fromlist=["_"])
        except ImportError:
            continue
        if mod.is_progress_bar_enabled():
            mod.disable_progress_bar()
            restore.append(mod)
    try:
        yield
    finally:
        for mod in restore:
            mod.enable_progress_bar()


def resolve_device(device: str) -> str:
    """auto -> cuda (this rank's GPU under torchrun), else mps, else cpu. Explicit devices are checked."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return f"cuda:{dist.local_rank()}" if dist.is_distributed() else "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(MSG_BAD_DEVICE.format(device=device, kind="CUDA GPU"))
    if kind == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise UsageError(MSG_BAD_DEVICE.format(device=device, kind="Apple MPS device"))
    return device


# ---- the generator -------------------------------------------------------------------------------------
