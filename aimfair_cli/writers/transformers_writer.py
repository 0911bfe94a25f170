"""The `transformers` prompt writer: a local chat model (a Hub id in the local cache, or a folder)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..errors import PromptWriterError, UsageError
from ..options import DEVICE_HELP, option
from .chat import INSTRUCTION_VERSION, MSG_NO_MODEL, ChatWriter, reject_unknown

log = logging.getLogger(__name__)


@dataclass
class TransformersOptions:
    """The transformers writer's options (`aimfair prompts --writer transformers ...`)."""

    model: str | None = option(None, help="a hub id in the local cache or a local folder (required).",
                               default_text="none")
    temperature: float = option(0.0, min=0, max=2, help="sampling temperature (0: greedy).")
    max_rounds: int = option(5, min=1, max=1000, help="requests per group before giving up on missing prompts.")
    max_new_tokens: int = option(4096, min=1, max=1_000_000, help="tokens generated per reply at most.")
    device: str = option("auto", help=DEVICE_HELP)


class TransformersWriter(ChatWriter):
    """Prompts from a local causal LM (a Hub id in the local cache or a folder), for users without an API.

    The conversation is rendered with the tokenizer's chat template (a plain "System/User/Assistant" text when
    it has none). temperature 0 decodes greedily; above 0 it samples, seeded per group and round so a rerun
    gives the same prompts on the same machine.
    """

    name = "transformers"
    options = TransformersOptions

    def __init__(
        self,
        *,
        model: str | None = TransformersOptions.model,
        temperature: float = TransformersOptions.temperature,
        max_rounds: int = TransformersOptions.max_rounds,
        max_new_tokens: int = TransformersOptions.max_new_tokens,
        device: str = TransformersOptions.device,
        **unknown: Any,
    ) -> None:
        reject_unknown(unknown, self.name)
        if not model:
            raise UsageError(MSG_NO_MODEL.format(writer=self.name, extra=" or a local folder"))
        super().__init__(max_rounds=max_rounds, temperature=temperature)
        from ..hub import first_line, locate_model, quiet_loading, resolve_device

        self.model, self.max_new_tokens = str(model), int(max_new_tokens)
        self.source = locate_model(self.model, marker="config.json", what="transformers model", error=PromptWriterError)
        self.device = resolve_device(device)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw = dict(local_files_only=self.source.local_files_only)
        try:
            with quiet_loading():
                self.tokenizer = AutoTokenizer.from_pretrained(self.source.name_or_path, **kw)
                self.lm = AutoModelForCausalLM.from_pretrained(self.source.name_or_path, **kw)
        except (OSError, ValueError, RuntimeError, ImportError, KeyError) as exc:
            raise PromptWriterError(f"cannot load transformers model '{self.model}': {first_line(exc)}") from exc
        # bf16 on GPUs that have it keeps 7B models in memory; CPUs compute fp32.
        if self.device.startswith("cuda"):
            self.lm = self.lm.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        self.lm = self.lm.to(self.device).eval()
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: list[dict[str, str]]) -> str:
        """The text the model continues: its chat template, or a plain transcript without one."""
        if self.has_chat_template:
            try:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # templates that refuse a system turn (e.g. Gemma): fold it into the first user turn
                folded = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
                return self.tokenizer.apply_chat_template(folded + messages[2:], tokenize=False,
                                                          add_generation_prompt=True)
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(turns) + "\n\nAssistant:"

    def _chat(self, messages: list[dict[str, str]], *, seed: int) -> str:
        import torch
        from transformers import GenerationConfig

        text = self.render(messages)
        # A chat template already writes the special tokens it needs; a plain transcript gets the usual ones.
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=not self.has_chat_template)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        sample = self.temperature > 0
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=sample,
                                  temperature=self.temperature if sample else None,
                                  top_p=None, top_k=None, pad_token_id=pad, eos_token_id=eos)
        if sample:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.lm.generate(**enc, generation_config=config)  # [1, prompt + new tokens]
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        import transformers

        return {
            "writer": self.name,
            "model": self.model,
            "source": self.source.where,
            "revision": self.source.revision,
            "temperature": self.temperature,
            "decoding": "sampling" if self.temperature > 0 else "greedy",
            "max_new_tokens": self.max_new_tokens,
            "max_rounds": self.max_rounds,
            "chat_template": self.has_chat_template,
            "device": self.device,
            "transformers_version": str(transformers.__version__),
            "instruction_version": INSTRUCTION_VERSION,
        }
