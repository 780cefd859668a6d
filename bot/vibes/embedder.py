"""The sentence embedder vibes uses for chat samples and queries, loaded on first use.

A :class:`~bot.llm.llama.Embedder` blocks and serialises its own calls, so :meth:`ChatEmbedder.embed` runs it
with :func:`asyncio.to_thread`. Loading waits for the first text, so a program that never profiles or ranks
(``chatmood run`` with nobody on ``/vibes``) never loads the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bot.config import Config
from bot.llm.llama import Embedder
from bot.llm.registry import resolve_model

#: Texts per call into llama.cpp: bounds how long one worker-thread call holds the model.
CHUNK = 64


class ChatEmbedder:
    def __init__(self, model: str, models_dir: Path, *, threads: int = 1) -> None:
        self._model = model
        self._models_dir = models_dir
        self._threads = threads
        self._embedder: Embedder | None = None
        self._loading = asyncio.Lock()

    @classmethod
    def from_config(cls, cfg: Config) -> ChatEmbedder:
        return cls(cfg.vibes.embedding_model, cfg.resolve(cfg.classifier.models_dir), threads=cfg.classifier.threads)

    @property
    def name(self) -> str:
        """What the stored embedding sums were made with: a different model means embedding anew."""
        return self._model

    def path(self) -> Path:
        """The checked GGUF path (raises :class:`~bot.errors.ModelError` with the fix when it is missing)."""
        return resolve_model(self._model, self._models_dir)

    async def _loaded(self) -> Embedder:
        async with self._loading:
            if self._embedder is None:
                path = self.path()
                self._embedder = await asyncio.to_thread(Embedder, path, threads=self._threads)
            return self._embedder

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` unit-length float32 rows."""
        embedder = await self._loaded()
        parts = [await asyncio.to_thread(embedder.embed, list(texts[i:i + CHUNK]))
                 for i in range(0, len(texts), CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)

    def close(self) -> None:
        """Free the model (blocks until a call in progress ends: call it off the loop, or at exit)."""
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
