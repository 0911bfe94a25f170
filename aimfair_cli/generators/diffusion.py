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

import importlib.util
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ..core.errors import GeneratorError, UsageError
from ..core.hub import first_line, locate_model, quiet_loading, require_safetensors, resolve_device
from ..core.options import DEVICE_HELP, MAX_IMAGE, option
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

MSG_SIZE_OPTION = "option --size applies to --generator procedural only"
MSG_UNKNOWN_OPTIONS = "option(s) {names} do not apply to --generator diffusers"
MSG_BAD_SCHEDULER = "unknown scheduler '{name}' (known: {known})"
MSG_BAD_DTYPE = "unknown dtype '{name}' (known: fp16, bf16, fp32)"
MSG_BAD_STEPS = "--steps must be at least 1, got {value}"
MSG_BAD_GUIDANCE = "--guidance must be >= 0, got {value}"
MSG_BAD_SIDE = "--height and --width must be positive multiples of 8, got {height}x{width}"
MSG_BAD_SAVE_SIZE = "--save-size must be at least 1, got {value}"
MSG_LOAD_FAILED = "cannot load {what} '{model}': {reason}"
MSG_NOT_TEXT_TO_IMAGE = "'{model}' is a {cls}, which does not take a text prompt"


@dataclass
class DiffusersOptions:
    """The diffusers generator's options (`aimfair synth --model ... --steps ...`)."""

    model: str = option(DEFAULT_MODEL, help="Hub id or local folder of the pipeline.")
    steps: int = option(25, min=1, max=1000, help="Denoising steps.")
    scheduler: str = option("dpm++", choices=tuple(SCHEDULERS),
                            help="dpm++ (DPM-Solver++ multistep), ddim (the official set-up, with --steps 50), euler, "
                            "euler-a (Euler ancestral) or pipeline (the one the pipeline was saved with).")
    guidance: float = option(9.0, min=0, max=100, help="Classifier-free guidance scale (official: 9.0).")
    height: int = option(512, min=8, max=MAX_IMAGE, help="Generated height in pixels.")
    width: int = option(512, min=8, max=MAX_IMAGE, help="Generated width in pixels.")
    save_size: int | None = option(None, min=8, max=MAX_IMAGE, default_text="keep the generated size",
                                   help="Resize saved images to this square size (the official code saves 224).")
    negative_prompt: str | None = option(None, help="Negative prompt.", default_text="none")
    dtype: str | None = option(None, choices=tuple(DTYPES), help="Weights' precision.",
                               default_text="fp16 on CUDA, fp32 on CPU")
    compile: bool = option(False, help="torch.compile the UNet (in channels_last).", default_text="off")
    device: str = option("auto", help=DEVICE_HELP)


class DiffusersGenerator:
    """Text-to-image with a diffusers pipeline loaded from a Hub id or a local folder.

    Defaults: Stable Diffusion 2.1 (the paper's model), DPM-Solver++ with 25 steps, guidance 9.0 (the official
    AIM-Fair value), 512x512, fp16 on CUDA and fp32 elsewhere. `save_size` resizes the returned images
    (the official code saves 224x224). The pipeline is loaded when the generator is built, so a missing
    model fails before any work starts.
    """

    name = "diffusers"
    options = DiffusersOptions

    def __init__(
        self,
        *,
        model: str = DiffusersOptions.model,
        steps: int = DiffusersOptions.steps,
        scheduler: str = DiffusersOptions.scheduler,
        guidance: float = DiffusersOptions.guidance,
        height: int = DiffusersOptions.height,
        width: int = DiffusersOptions.width,
        save_size: int | None = DiffusersOptions.save_size,
        negative_prompt: str | None = DiffusersOptions.negative_prompt,
        dtype: str | None = DiffusersOptions.dtype,
        compile: bool = DiffusersOptions.compile,
        device: str = DiffusersOptions.device,
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
        if self.source.where == "folder":
            require_safetensors(self.source.name_or_path, expected="diffusion_pytorch_model.safetensors in each "
                                "component folder", error=GeneratorError)
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
            module = getattr(pipe, denoiser)
            if denoiser == "unet":
                module.to(memory_format=torch.channels_last)  # convolutions run faster in NHWC on GPUs
            setattr(pipe, denoiser, torch.compile(module))
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
