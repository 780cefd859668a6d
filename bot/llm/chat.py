"""The owner of a chat model that writes short replies (the personas' voice).

:class:`ChatGenerator` holds one llama-cpp model and context; its calls are serialised with a lock and
block, so async callers run them with :func:`asyncio.to_thread`. ``generate`` renders the chat with the
model's own template (``tokenizer.chat_template``, ChatML when the file has none), samples token by token
and stops at the end of the turn, at the end of the first line, at ``max_tokens``, or at ``deadline``: a
thread cannot be cancelled, so the time budget is checked between tokens and the caller learns that the
answer came too late (``stopped == "deadline"``). Prompt evaluation itself runs to completion.

Load failures raise :class:`~bot.errors.ModelError` naming the path; a failing decode too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import llama_cpp
import structlog
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from bot.errors import ModelError
from bot.llm.llama import _load

log = structlog.get_logger(__name__)

Stopped = Literal["end", "line", "length", "deadline"]
# Text that ends a turn even when the model writes it as plain text instead of its special token.
_TURN_MARKERS = ("<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|end|>", "</s>", "<end_of_turn>")


@dataclass(frozen=True, slots=True)
class Generated:
    text: str
    tokens: int  # generated
    prompt_tokens: int
    seconds: float  # prompt evaluation and generation
    stopped: Stopped

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def chatml(messages: Sequence[Mapping[str, str]]) -> str:
    """The ChatML rendering (SmolLM2's, Qwen's) for models whose file carries no chat template."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


class ChatGenerator:
    """One chat model: ``generate(messages, ...)`` -> :class:`Generated`. Thread-safe; one call at a time."""

    def __init__(self, path: Path, *, threads: int, n_ctx: int = 2048) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._llama: llama_cpp.Llama | None = None
        # use_mmap=False: Q4_0 weights are repacked into llama.cpp's own buffer (see LabelScorer)
        llama = _load(self.path, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                      use_mmap=False)
        self._llama = llama
        self.n_ctx = int(llama.n_ctx())
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        template = llama.metadata.get("tokenizer.chat_template", "")
        self._formatter: Jinja2ChatFormatter | None = None
        if template:
            eos, bos = llama.token_eos(), llama.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template,
                eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
            )
        log.info("chat_model_loaded", path=str(self.path), n_ctx=self.n_ctx, threads=threads,
                 template="own" if template else "chatml")

    @property
    def name(self) -> str:
        return self.path.name

    def prompt_tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """The tokens the model reads for ``messages`` (its chat template, ready for the assistant's turn)."""
        llama = self._require()
        msgs: Any = [dict(m) for m in messages]
        if self._formatter is not None:
            rendered = self._formatter(messages=msgs)
            text, bos = rendered.prompt, not rendered.added_special
        else:
            text, bos = chatml(messages), True
        return list(llama.tokenize(text.encode("utf-8", "replace"), add_bos=bos, special=True))

    def generate(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        one_line: bool = True,
        repeat_penalty: float = 1.3,
    ) -> Generated:
        """Sample a reply. ``deadline`` is a ``clock()`` time: generation stops at it (``stopped="deadline"``).

        Raises ``ValueError`` when the prompt leaves no room for ``max_tokens`` in the context, and
        :class:`ModelError` when llama.cpp fails."""
        with self._lock:
            llama = self._require()
            t0 = time.perf_counter()
            prompt = self.prompt_tokens(messages)
            if len(prompt) + max_tokens > self.n_ctx:
                raise ValueError(f"prompt of {len(prompt)} tokens + {max_tokens} to write exceed the "
                                 f"{self.n_ctx}-token context")
            if deadline is not None and clock() >= deadline:
                return Generated("", 0, len(prompt), time.perf_counter() - t0, "deadline")
            if seed is not None:
                llama.set_seed(seed)
            out: list[int] = []
            text = ""
            stopped: Stopped = "length"
            try:
                for token in llama.generate(prompt, temp=temperature, repeat_penalty=repeat_penalty):
                    if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                        stopped = "end"
                        break
                    out.append(token)
                    text = llama.detokenize(out, special=False).decode("utf-8", "ignore")
                    marker = min((i for i in (text.find(m) for m in _TURN_MARKERS) if i >= 0), default=-1)
                    if marker >= 0:
                        text, stopped = text[:marker], "end"
                        break
                    if one_line and "\n" in text.lstrip():
                        text, stopped = text.lstrip().split("\n", 1)[0], "line"
                        break
                    if len(out) >= max_tokens:
                        break
                    if deadline is not None and clock() >= deadline:
                        stopped = "deadline"
                        break
            except RuntimeError as e:  # llama-cpp-python raises RuntimeError when llama_decode fails
                raise ModelError(self.path, f"generation failed ({e})") from None
            return Generated(text, len(out), len(prompt), time.perf_counter() - t0, stopped)

    def _require(self) -> llama_cpp.Llama:
        if self._llama is None:
            raise ModelError(self.path, "the model is closed")
        return self._llama

    def close(self) -> None:
        """Free the model (idempotent); waits for a call in progress on another thread."""
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    def __enter__(self) -> ChatGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
