"""bot.llm.chat on a tiny generated GGUF: the chat model owner samples what llama.cpp samples, stops where it says.

The reference is an independent path: a plain ``llama_cpp.Llama`` completing the same prompt tokens greedily."""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from bot.errors import ModelError
from bot.llm.chat import ChatGenerator, chatml
from tests.fakes.gguf import write_tiny_llama

MESSAGES = [
    {"role": "system", "content": "You are a chat bot. Right now chat is hype, 61%."},
    {"role": "user", "content": "viewer: what a play gg"},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("chat") / "tiny-chat.gguf")


@pytest.fixture(scope="module")
def generator(tiny: Path) -> Iterator[ChatGenerator]:
    with ChatGenerator(tiny, threads=1, n_ctx=512) as g:
        yield g


def reference(path: Path, prompt: list[int], max_tokens: int) -> str:
    llm = llama_cpp.Llama(str(path), n_ctx=512, verbose=False)
    try:
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.3)
        return str(out["choices"][0]["text"])  # type: ignore[index]
    finally:
        llm.close()


class TestChatGenerator:
    def test_renders_chatml_without_a_template(self, generator: ChatGenerator) -> None:
        """The tiny file has no chat template: the prompt is ChatML, the turns in order, ready for the answer."""
        text = chatml(MESSAGES)
        assert text.endswith("<|im_start|>assistant\n") and text.index("You are") < text.index("viewer:")
        assert generator.prompt_tokens(MESSAGES)[0] == 1  # BOS, as the file asks

    def test_greedy_text_is_what_llama_cpp_completes(self, tiny: Path, generator: ChatGenerator) -> None:
        got = generator.generate(MESSAGES, max_tokens=24, temperature=0.0, one_line=False)
        want = reference(tiny, generator.prompt_tokens(MESSAGES), 24)
        assert got.text == want
        assert got.tokens == 24 and got.stopped == "length" and got.prompt_tokens == len(generator.prompt_tokens(
            MESSAGES))
        assert got.seconds > 0 and got.tokens_per_s > 0

    def test_one_line_stops_at_the_first_line_break_after_text(self, generator: ChatGenerator) -> None:
        full = generator.generate(MESSAGES, max_tokens=200, temperature=0.0, one_line=False)
        assert "\n" in full.text.lstrip(), "the tiny model writes a line break within 200 tokens"
        line = generator.generate(MESSAGES, max_tokens=200, temperature=0.0)
        assert line.stopped == "line"
        assert line.text == full.text.lstrip().split("\n", 1)[0]
        assert line.tokens < full.tokens

    def test_deadline_stops_between_tokens(self, generator: ChatGenerator) -> None:
        ticks = itertools.count()
        clock = lambda: float(next(ticks))  # noqa: E731 - one tick per look at the clock
        # the clock reads 0 before prompt evaluation, then 1, 2, ... after each token: the 5th token meets it
        r = generator.generate(MESSAGES, max_tokens=200, temperature=0.0, deadline=5.0, clock=clock, one_line=False)
        assert r.stopped == "deadline" and r.tokens == 5

    def test_a_passed_deadline_evaluates_nothing(self, generator: ChatGenerator) -> None:
        r = generator.generate(MESSAGES, max_tokens=20, temperature=0.0, deadline=0.0, clock=lambda: 1.0)
        assert (r.text, r.tokens, r.stopped) == ("", 0, "deadline")

    def test_same_seed_same_sample(self, generator: ChatGenerator) -> None:
        a = generator.generate(MESSAGES, max_tokens=16, temperature=1.0, seed=7, one_line=False)
        b = generator.generate(MESSAGES, max_tokens=16, temperature=1.0, seed=7, one_line=False)
        c = generator.generate(MESSAGES, max_tokens=16, temperature=1.0, seed=8, one_line=False)
        assert a.text == b.text and a.text != c.text

    def test_a_prompt_that_leaves_no_room_is_refused(self, generator: ChatGenerator) -> None:
        long = [{"role": "user", "content": "gg " * 600}]
        with pytest.raises(ValueError, match="exceed"):
            generator.generate(long, max_tokens=16, temperature=0.0)


class TestLoading:
    def test_loads_on_several_threads_leave_stdout_alone(self, tiny: Path) -> None:
        """llama-cpp-python points stdout/stderr at /dev/null while it loads; loads on several threads at once
        must not leave them there (they take turns)."""
        before = (sys.stdout, sys.stderr, os.fstat(1).st_ino, os.fstat(2).st_ino)

        def load_and_close() -> None:
            for _ in range(3):
                ChatGenerator(tiny, threads=1, n_ctx=256).close()

        threads = [threading.Thread(target=load_and_close) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (sys.stdout, sys.stderr, os.fstat(1).st_ino, os.fstat(2).st_ino) == before

    def test_missing_and_broken_files_name_the_path(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError, match="not found") as e:
            ChatGenerator(tmp_path / "nope.gguf", threads=1)
        assert "nope.gguf" in str(e.value)
        broken = tmp_path / "broken.gguf"
        broken.write_bytes(b"GGUF" + b"\x00" * 64)
        with pytest.raises(ModelError) as e:
            ChatGenerator(broken, threads=1)
        assert "broken.gguf" in str(e.value)

    def test_closed_refuses(self, tiny: Path) -> None:
        g = ChatGenerator(tiny, threads=1, n_ctx=256)
        g.close()
        g.close()  # idempotent
        with pytest.raises(ModelError, match="closed"):
            g.generate(MESSAGES, max_tokens=4, temperature=0.0)
