"""The `diffusers` generator: any diffusers text-to-image pipeline, Stable Diffusion 2.1 by default (paper §4.3).

    gen = DiffusersGenerator(model="stabilityai/stable-diffusion-2-1", steps=25, scheduler="dpm++")
    images = gen.generate([ImageRequest(prompt="...", seed=123, index=0), ...])

Reproducibility: each request gets its own `torch.Generator` seeded with `request.seed`, and the pipeline is
given the list of generators, so each image's starting noise depends only on its own seed — never on the batch
it was made in, its position in that batch, or the shard that made it. The generators live on the pipeline's
device (CUDA noise differs from CPU noise, so the same seed gives a different image on a GPU than on a CPU; on
Apple MPS the noise is drawn on the CPU, as diffusers recommends). Batched matrix products round differently
from unbatched ones, so an image made in a batch of 32 may differ from the same image made alone by one grey
level in a few pixels; the picture itself is the same.

Model loading never hangs on a missing network: `locate_model` looks in the local folder / Hugging Face cache
first, checks the Hub with a short timeout only when `HF_HUB_OFFLINE` is not set, and otherwise raises one
`GeneratorError` line saying what to do.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .. import dist
from ..errors import AimfairError, GeneratorError, UsageError
from .base import ImageRequest

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1"
SCHEDULERS = {
    # name -> (diffusers class, extra config). DPM-Solver++ multistep reaches DDIM-50 quality in ~25 steps.
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),  # the official AIM-Fair set-up: --scheduler ddim --steps 50
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "pipeline": (None, {}),  # keep the scheduler the pipeline was saved with
}
DTYPES = {"fp16": "float16", "float16": "float16", "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp32": "float32", "float32": "float32", "float": "float32"}
HUB_TIMEOUT_S = 5.0  # how long to wait for the Hub before deciding there is no network

MSG_SIZE_OPTION = "option --size applies to --generator procedural only"
MSG_UNKNOWN_OPTIONS = "option(s) {names} do not apply to --generator diffusers"
MSG_BAD_SCHEDULER = "unknown scheduler '{name}' (known: {known})"
MSG_BAD_DTYPE = "unknown dtype '{name}' (known: fp16, bf16, fp32)"
MSG_BAD_STEPS = "--steps must be at least 1, got {value}"
MSG_BAD_GUIDANCE = "--guidance must be >= 0, got {value}"
MSG_BAD_SIDE = "--height and --width must be positive multiples of 8, got {height}x{width}"
MSG_BAD_SAVE_SIZE = "--save-size must be at least 1, got {value}"
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
MSG_LOAD_FAILED = "cannot load {what} '{model}': {reason}"
MSG_NOT_TEXT_TO_IMAGE = "'{model}' is a {cls}, which does not take a text prompt"


# ---- where a model comes from ---------------------------------------------------------------------------
# Shared with the transformers prompt writer (writers/llm.py), which loads local chat models the same way.


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from, and whether from_pretrained may touch the network."""

    name_or_path: str
    where: str  # "folder", "cache" or "hub"
    local_files_only: bool
    revision: str | None = None  # the Hub commit, when known


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


class DiffusersGenerator:
    """Text-to-image with a diffusers pipeline loaded from a Hub id or a local folder.

    Defaults: Stable Diffusion 2.1 (the paper's model), DPM-Solver++ with 25 steps, guidance 9.0 (the official
    AIM-Fair value), 512x512, fp16 on CUDA and fp32 elsewhere. `save_size` resizes the returned images
    (the official code saves 224x224). The pipeline is loaded when the generator is built, so a missing
    model fails before any work starts.
    """

    name = "diffusers"

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        steps: int = 25,
        scheduler: str = "dpm++",
        guidance: float = 9.0,
        height: int = 512,
        width: int = 512,
        save_size: int | None = None,
        negative_prompt: str | None = None,
        dtype: str | None = None,
        compile: bool = False,
        device: str = "auto",
        size: int | None = None,
        **unknown: Any,
    ) -> None:
        if size is not None:
            raise UsageError(MSG_SIZE_OPTION)
        if unknown:
            names = ", ".join("--" + k.replace("_", "-") for k in sorted(unknown))
            raise UsageError(MSG_UNKNOWN_OPTIONS.format(names=names))
        if scheduler not in SCHEDULERS:
            raise UsageError(MSG_BAD_SCHEDULER.format(name=scheduler, known=", ".join(SCHEDULERS)))
        if dtype is not None and dtype.lower() not in DTYPES:
            raise UsageError(MSG_BAD_DTYPE.format(name=dtype))
        if steps < 1:
            raise UsageError(MSG_BAD_STEPS.format(value=steps))
        if guidance < 0:
            raise UsageError(MSG_BAD_GUIDANCE.format(value=guidance))
        if height < 8 or width < 8 or height % 8 or width % 8:
            raise UsageError(MSG_BAD_SIDE.format(height=height, width=width))
        if save_size is not None and save_size < 1:
            raise UsageError(MSG_BAD_SAVE_SIZE.format(value=save_size))
        self.model, self.steps, self.scheduler_name = str(model), int(steps), scheduler
        self.guidance, self.height, self.width = float(guidance), int(height), int(width)
        self.save_size, self.negative_prompt, self.compile = save_size, negative_prompt, bool(compile)
        # Where the model is comes first: it needs no torch import, so a missing model fails in a blink.
        self.source = locate_model(self.model, marker="model_index.json", what="diffusers pipeline")
        self.device = resolve_device(device)
        # fp16 halves memory and doubles speed on GPUs; CPUs are slow and inexact in fp16, so fp32 there.
        self.dtype = DTYPES[dtype.lower()] if dtype else ("float16" if self.device.startswith("cuda") else "float32")
        self.pipe = self._load()

    def _load(self) -> Any:
        import inspect

        import diffusers
        import torch

        dtype = getattr(torch, self.dtype)
        # diffusers renamed from_pretrained's `torch_dtype` to `dtype`; older releases only know the former.
        dtype_kw = "dtype" if _has_dtype_kwarg() else "torch_dtype"
        try:
            with quiet_loading():
                pipe = diffusers.DiffusionPipeline.from_pretrained(
                    self.source.name_or_path, local_files_only=self.source.local_files_only, **{dtype_kw: dtype},
                    # without accelerate diffusers warns on every load and then loads normally anyway
                    low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,
                )
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            raise GeneratorError(MSG_LOAD_FAILED.format(what="diffusers pipeline", model=self.model,
                                                        reason=first_line(exc))) from exc
        if "prompt" not in inspect.signature(pipe.__call__).parameters:
            raise GeneratorError(MSG_NOT_TEXT_TO_IMAGE.format(model=self.model, cls=type(pipe).__name__))
        cls_name, extra = SCHEDULERS[self.scheduler_name]
        if cls_name is not None:
            # from_config keeps the model's noise schedule and prediction type (SD 2.1 predicts v).
            pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        if self.compile:
            denoiser = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
            setattr(pipe, denoiser, torch.compile(getattr(pipe, denoiser)))
        log.info("loaded %s from %s (%s) on %s, %s", type(pipe).__name__, self.model, self.source.where,
                 self.device, self.dtype)
        return pipe

    def _noise_device(self) -> str:
        return "cpu" if self.device in ("cpu", "mps") else self.device

    def generate(self, requests: Sequence[ImageRequest]) -> list["Image.Image"]:
        """One image per request, in order; each image's noise comes from its own seed only."""
        import torch
        from PIL import Image

        if not requests:
            return []
        generators = [torch.Generator(self._noise_device()).manual_seed(int(r.seed)) for r in requests]
        kwargs: dict[str, Any] = dict(
            prompt=[r.prompt for r in requests],
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            height=self.height,
            width=self.width,
            generator=generators,
            output_type="pil",
        )
        if self.negative_prompt:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(requests)
        try:
            with torch.inference_mode():
                images = list(self.pipe(**kwargs).images)
        except torch.cuda.OutOfMemoryError as exc:
            raise GeneratorError(f"out of GPU memory with {len(requests)} images per batch: lower --batch-size") from exc
        if self.save_size:
            side = (self.save_size, self.save_size)
            images = [im.resize(side, Image.Resampling.LANCZOS) if im.size != side else im for im in images]
        return images

    def describe(self) -> dict[str, Any]:
        import diffusers
        import torch

        return {
            "generator": self.name,
            "model": self.model,
            "source": self.source.where,
            "revision": self.source.revision,
            "pipeline": type(self.pipe).__name__,
            "scheduler": self.scheduler_name,
            "scheduler_class": type(self.pipe.scheduler).__name__,
            "steps": self.steps,
            "guidance": self.guidance,
            "height": self.height,
            "width": self.width,
            "save_size": self.save_size,
            "negative_prompt": self.negative_prompt,
            "dtype": self.dtype,
            "device": self.device,
            "noise_device": self._noise_device(),
            "compile": self.compile,
            "diffusers_version": str(diffusers.__version__),
            "torch_version": str(torch.__version__),  # TorchVersion is a str subclass YAML cannot write
        }


def _has_dtype_kwarg() -> bool:
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:
        return False
    return hasattr(deprecation_utils, "_resolve_dtype")
