"""Grammar-constrained decoding for the transformers writer, with xgrammar (the optional extra `grammar`).

At every step a model may only pick tokens that keep its reply a prefix of the request's JSON schema — the
object {"contexts": [{field: string} x n]} of the composed mode (`compose.context_schema`) or {"prompts":
[string x n]} of the free mode (`chat.reply_schema`) — and, once the object is closed, only a stop token. Even a tiny model then
returns JSON that parses, and generation ends with the object. The content is judged afterwards like any
reply. Why xgrammar: a CPU wheel with no dependency beyond torch and transformers, JSON schema compiled to a
token mask in milliseconds, per-row matchers that fit a batched `model.generate` (one per group), maintained by
the MLC team and used by vLLM and SGLang.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from typing import Any, Sequence

log = logging.getLogger(__name__)

HINT = ("xgrammar is not installed: replies of --writer transformers are not constrained to JSON "
        "(pip install 'aimfair[grammar]' for constrained decoding)")


def available() -> bool:
    return importlib.util.find_spec("xgrammar") is not None


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("xgrammar")


class SchemaGrammar:
    """Reply schemas compiled for one tokenizer (once per schema), and a logits processor per generate call."""

    def __init__(self, tokenizer: Any, *, vocab_size: int, stop_ids: Sequence[int]) -> None:
        import xgrammar as xgr

        # vocab_size: the model's output width, which may exceed the tokenizer's vocabulary (padded lm_head).
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        self.vocab_size = vocab_size
        self._compiler = xgr.GrammarCompiler(info)
        self._compiled: dict[str, Any] = {}

    def compiled(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema)  # key order kept: the reply follows the properties in order
        if key not in self._compiled:
            # any_whitespace=False: JSON's separators only, so a model cannot spend its budget on blank space.
            self._compiled[key] = self._compiler.compile_json_schema(key, any_whitespace=False, strict_mode=True)
        return self._compiled[key]

    def processor(self, schemas: Sequence[dict[str, Any]]) -> Any:
        """A logits processor for one `generate` call whose row i must follow `schemas[i]`."""
        return _constrained_rows()([self.compiled(s) for s in schemas], self.vocab_size)


def _constrained_rows() -> type:
    """The logits processor class (built on first use: transformers and xgrammar are imported only then)."""
    global _ROWS
    if _ROWS is not None:
        return _ROWS
    import xgrammar as xgr
    from transformers import LogitsProcessor

    class ConstrainedRows(LogitsProcessor):
        """One grammar matcher per batch row. Each call first feeds every live matcher the token its row chose
        at the previous step (the last column of input_ids), then masks the scores to the tokens each grammar
        allows next. A row whose matcher has accepted a stop token is finished: generate pads it and its
        previous mask (stop tokens only) is kept, so its scores never become all -inf. Used once per generate."""

        def __init__(self, grammars: list[Any], vocab_size: int) -> None:
            self.matchers = [xgr.GrammarMatcher(g) for g in grammars]
            self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)  # [rows, ceil(vocab / 32)] int32
            self.started = False

        def __call__(self, input_ids: Any, scores: Any) -> Any:  # input_ids [rows, seq], scores [rows, vocab]
            if self.started:
                for i, matcher in enumerate(self.matchers):
                    if not matcher.is_terminated() and not matcher.accept_token(int(input_ids[i, -1])):
                        log.debug("grammar matcher of row %d refused token %d", i, int(input_ids[i, -1]))
            self.started = True
            for i, matcher in enumerate(self.matchers):
                if not matcher.is_terminated():
                    matcher.fill_next_token_bitmask(self.bitmask, i)
            # xgrammar masks logits on CPU and CUDA; other devices go through the CPU.
            on = scores if scores.device.type in ("cpu", "cuda") else scores.cpu()
            xgr.apply_token_bitmask_inplace(on, self.bitmask.to(on.device))
            return on.to(scores.device)

    _ROWS = ConstrainedRows
    return _ROWS


_ROWS: type | None = None
