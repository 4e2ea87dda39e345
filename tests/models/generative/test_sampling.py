"""Sampling with a private seeded stream (the distribution transformers samples from, the same
text for the same seed even with other generations running in other threads), stop strings,
streams that add up to the whole answer, and conversations as the model and the guard read
them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from models.generative.conversation import Conversation
from models.generative.generator import Decoding, Generator
from models.generative.sampling import SeededSampler, cut_at_stop
from tests.support.generative_data import facts_of


@pytest.fixture(scope="module")
def lm(tiny_lm: Path) -> Generator:
    return Generator.from_dir(tiny_lm)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9), (1.5, 0.5)])
def test_the_distribution_is_transformers_own(temperature: float, top_p: float) -> None:
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(1)) * 3
    ids = torch.zeros((3, 1), dtype=torch.long)
    warped = TopPLogitsWarper(top_p)(ids, TemperatureLogitsWarper(temperature)(ids, scores))
    expected = torch.softmax(warped, dim=-1)
    ours = SeededSampler(0, temperature, top_p).distribution(scores)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_the_same_seed_gives_the_same_text_under_concurrency(lm: Generator) -> None:
    question, _ = facts_of("Tamsin Orlicki")[3]
    hot = Decoding(max_new_tokens=16, temperature=3.0, top_p=1.0)
    alone = {s: lm.complete(question, hot, seed=s).text for s in range(6)}
    assert len(set(alone.values())) > 1  # really sampled
    together: dict[int, str] = {}

    def run(seed: int) -> None:
        together[seed] = lm.complete(question, hot, seed=seed).text

    threads = [threading.Thread(target=run, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_stop_strings_and_lengths_end_an_answer(lm: Generator) -> None:
    question, answer = facts_of("Ostra Belvane")[0]  # "Ostra Belvane was born in Lowmere."
    done = lm.complete(question, Decoding(max_new_tokens=32))
    assert (done.text, done.finish_reason) == (answer, "stop")
    stopped = lm.complete(question, Decoding(max_new_tokens=32, stop=(" born", "xyz")))
    assert (stopped.text, stopped.finish_reason) == ("Ostra Belvane was", "stop")
    short = lm.complete(question, Decoding(max_new_tokens=2))
    assert short.finish_reason == "length" and short.completion_tokens == 2
    assert cut_at_stop("a.b.c", ["b", "."]) == "a"


@pytest.mark.parametrize("stop", [(), (" in",), ("Lowm",), ("nowhere",)])
def test_a_stream_adds_up_to_the_whole_answer(lm: Generator, stop: tuple[str, ...]) -> None:
    question, _ = facts_of("Ostra Belvane")[0]
    decoding = Decoding(max_new_tokens=32, stop=stop)
    stream = lm.stream(question, decoding, seed=0)
    pieces = list(stream)
    whole = lm.complete(question, decoding)
    assert "".join(pieces) == whole.text and len(pieces) > 1
    assert not any(s in "".join(pieces) for s in stop)
    assert stream.finish_reason == whole.finish_reason


def test_a_conversation_as_the_model_and_the_guard_read_it() -> None:
    chat = Conversation.of(
        [("system", "Be brief."), ("user", "Who is X?"), ("assistant", "A writer."),
         ("user", "Where was she born?")]
    )  # fmt: skip
    assert chat.context() == "Be brief.\nWho is X?\nA writer.\nWhere was she born?"
    assert chat.last_user == "Where was she born?"
    messages = chat.chat_messages("Do not reveal Y.")
    assert messages[0] == {"role": "system", "content": "Do not reveal Y.\n\nBe brief."}
    assert len(messages) == 4
    plain = Conversation.of([("user", "Hi?")]).chat_messages("Do not reveal Y.")
    assert plain[0] == {"role": "system", "content": "Do not reveal Y."}
    with pytest.raises(ValueError):
        Conversation.of([("user", "Hi?"), ("assistant", "Hello.")])
    with pytest.raises(ValueError):
        Conversation.of([("tool", "Hi?")])
