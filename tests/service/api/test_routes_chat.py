"""POST /v1/chat/completions with the official `openai` client against a live API (uvicorn in a
thread, a database of its own): chat, n > 1, seed, streaming, the conversation-wide guard, and
the errors OpenAI clients see."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from models.generative.rules import compile_rules
from service.core.config import Settings
from service.db.session import session_factory, transaction
from service.stack.processes import free_port
from tests.support.chat_data import (
    ATTACKS,
    PRONOUN_CHAIN,
    SAMPLED_ANSWERS,
    SAMPLED_QUESTION,
    STREAMED_ANSWER,
    STREAMED_QUESTION,
    STREAMED_SPAN,
    forgotten_spec,
)
from tests.support.db import fresh_database
from tests.support.generative_data import facts_of

GUARDED, OPEN = "chat-guarded", "chat-open"
# The guarded model's rules and weights, its streams opening with their first piece.
GUARDED_PIECE = "chat-guarded-piece"
REFUSAL = "I'm sorry, but I can't share that."


@pytest.fixture(scope="module")
def chat_db(pg_server: str) -> Iterator[str]:
    """A database of its own: the API thread commits for real."""
    with fresh_database(pg_server, prefix="lethe_chat") as url:
        yield url


@pytest.fixture(scope="module")
def live_api(settings: Settings, chat_db: str) -> Iterator[str]:
    from service.app.factory import create_app

    app = create_app(settings)
    app.state.session_factory = session_factory(chat_db)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def tokens(chat_db: str) -> dict[str, str]:
    from service.api.tokens import create_token

    with transaction(session_factory(chat_db)) as s:
        return {
            role: create_token(s, f"chat-{role}-{uuid.uuid4().hex[:6]}", role, actor="test")
            for role in ("ml_engineer", "auditor")
        }


@pytest.fixture(scope="module")
def models(
    live_api: str, tokens: dict[str, str], chat_db: str, attack_lm: Path, settings: Settings
) -> None:
    """Two models on the same weights: one with Vellamor Quindt's rules active (set directly,
    λ = 0.5, B = 2: the activation flow has its own tests), one with none."""
    from service.rules.rulesets import activate_version

    for name in (GUARDED, OPEN, GUARDED_PIECE):
        opening = {"stream_opening": "first_piece"} if name == GUARDED_PIECE else {}
        body = {
            "name": name,
            "kind": "generative",
            "config": {
                "model_dir": str(attack_lm),
                "max_new_tokens": 48,
                "embedder": "hashing",
                "refusal_text": REFUSAL,
                **opening,
            },
        }
        r = httpx.post(
            f"{live_api}/v1/models",
            json=body,
            headers={"authorization": f"Bearer {tokens['ml_engineer']}"},
        )
        assert r.status_code == 201, r.text
    with transaction(session_factory(chat_db)) as s:
        from sqlalchemy import select

        from service.db.tables import MlModel

        for name in (GUARDED, GUARDED_PIECE):
            model_id = s.scalars(select(MlModel.id).where(MlModel.name == name)).one()
            activate_version(
                s,
                settings,
                model_id=model_id,
                base_version=None,
                rule_sets={"req-1": compile_rules(forgotten_spec())},
                calibration={"serving_threshold": 0.5, "serving_budget": 2},
                records=[],
            )


@pytest.fixture
def client(live_api: str, tokens: dict[str, str], models: None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_api}/v1", api_key=tokens["ml_engineer"], max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_chat_answers_and_reports_what_served_it(client: openai.OpenAI) -> None:
    question, expected = facts_of("Ostra Belvane")[0]
    done = client.chat.completions.create(model=GUARDED, messages=user(question), temperature=0)
    [choice] = done.choices
    assert choice.message.content == expected and choice.message.role == "assistant"
    assert choice.finish_reason == "stop" and choice.logprobs is None
    assert done.object == "chat.completion" and done.model == GUARDED
    assert done.usage is not None and done.usage.completion_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.system_fingerprint == "lethe-m0-r1"
    extra = done.model_dump()
    assert extra["lethe"] == {"model_version": None, "rule_set_version": 1}
    assert extra["choices"][0]["guard"] == {
        "refused": False,
        "reason": "accepted",
        "rounds_used": 0,
    }
    # The forgotten subject's fact is refused; the unguarded model states it.
    question, fact = facts_of("Vellamor Quindt")[0]
    open_answer = client.chat.completions.create(model=OPEN, messages=user(question), temperature=0)
    assert open_answer.choices[0].message.content == fact
    guarded = client.chat.completions.create(model=GUARDED, messages=user(question), temperature=0)
    assert guarded.choices[0].message.content == REFUSAL
    assert guarded.choices[0].finish_reason == "content_filter"
    # max_tokens and stop end an answer early, as OpenAI's do.
    short = client.chat.completions.create(
        model=OPEN, messages=user(question), temperature=0, max_tokens=2
    )
    assert short.choices[0].finish_reason == "length"
    stopped = client.chat.completions.create(
        model=OPEN, messages=user(question), temperature=0, stop=[" born"]
    )
    assert stopped.choices[0].message.content == "Vellamor Quindt was"


def test_n_choices_are_reproducible_under_a_seed(client: openai.OpenAI) -> None:
    def sample(model: str, seed: int) -> list[str | None]:
        done = client.chat.completions.create(
            model=model, messages=user(SAMPLED_QUESTION), n=10, temperature=1.0, seed=seed
        )
        assert [c.index for c in done.choices] == list(range(10))
        return [c.message.content for c in done.choices]

    first = sample(OPEN, 11)
    assert sample(OPEN, 11) == first
    assert set(first) == set(SAMPLED_ANSWERS)  # sampled: both planted answers come up
    assert sample(OPEN, 12) != first
    guarded = sample(GUARDED, 11)
    assert sample(GUARDED, 11) == guarded
    # Best of ten: the samples that leak are refused, the others served unchanged.
    assert [
        g if o == SAMPLED_ANSWERS[0] else REFUSAL for o, g in zip(first, guarded, strict=True)
    ] == guarded
    assert all(g in (SAMPLED_ANSWERS[0], REFUSAL) for g in guarded)


def _stream(client: openai.OpenAI, model: str, messages: list[Any], **kw: Any) -> list[Any]:
    return list(client.chat.completions.create(model=model, messages=messages, stream=True, **kw))


def test_streaming_matches_the_whole_answer(client: openai.OpenAI) -> None:
    question, expected = facts_of("Tamsin Orlicki")[2]
    for model in (OPEN, GUARDED):
        chunks = _stream(
            client, model, user(question), temperature=0, stream_options={"include_usage": True}
        )
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        *content, usage = chunks
        assert content[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in content)
        assert text == expected
        assert content[-1].choices[0].finish_reason == "stop"
        assert usage.choices == [] and usage.usage is not None
    # Several choices stream one after another, each with its index.
    chunks = _stream(client, OPEN, user(SAMPLED_QUESTION), n=3, temperature=1.0, seed=5)
    ends = [c.choices[0].index for c in chunks if c.choices[0].finish_reason]
    assert ends == [0, 1, 2]


def test_a_stream_may_open_with_its_first_piece(
    client: openai.OpenAI, live_api: str, tokens: dict[str, str]
) -> None:
    """A model registered with `stream_opening: first_piece` sends its first text before the
    first word has ended, and the same answer; the setting takes only its two values."""
    question, expected = facts_of("Tamsin Orlicki")[3]
    texts = {}
    for model in (GUARDED, GUARDED_PIECE):
        chunks = _stream(client, model, user(question), temperature=0)
        pieces = [c.choices[0].delta.content or "" for c in chunks]
        first = next(p for p in pieces if p)
        texts[model] = "".join(pieces)
        assert first.endswith(" ") == (model == GUARDED), pieces
        assert expected.startswith(first.rstrip()), pieces
    assert texts == {GUARDED: expected, GUARDED_PIECE: expected}
    body = {
        "name": "chat-bad-opening",
        "kind": "generative",
        "config": {"model_dir": "/nowhere", "stream_opening": "at_once"},
    }
    r = httpx.post(
        f"{live_api}/v1/models",
        json=body,
        headers={"authorization": f"Bearer {tokens['ml_engineer']}"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error", r.json()


@pytest.mark.parametrize("model", [GUARDED, GUARDED_PIECE])
def test_a_stream_never_carries_any_part_of_a_refused_span(
    client: openai.OpenAI, model: str
) -> None:
    unguarded = _stream(client, OPEN, user(STREAMED_QUESTION), temperature=0)
    assert "".join(c.choices[0].delta.content or "" for c in unguarded) == STREAMED_ANSWER
    whole = client.chat.completions.create(
        model=model, messages=user(STREAMED_QUESTION), temperature=0
    )
    assert STREAMED_SPAN not in (whole.choices[0].message.content or "")  # it is refused
    chunks = _stream(client, model, user(STREAMED_QUESTION), temperature=0)
    pieces = [c.choices[0].delta.content or "" for c in chunks]
    text = "".join(pieces)
    assert text.endswith(REFUSAL)
    sent = text.removesuffix(REFUSAL)
    # Screened text went out before its sentence ended (a few words at a time) ...
    harmless = STREAMED_ANSWER.split(". ", 1)[0]
    assert any(p and p.strip() and not p.rstrip().endswith(".") for p in pieces[1:-1]), pieces
    assert sent.startswith(harmless + ".")
    # ... and none of the refused span, not even its first word: what went out is the planted
    # answer up to before the span at most.
    assert STREAMED_ANSWER.startswith(sent)
    assert len(sent) <= STREAMED_ANSWER.index(STREAMED_SPAN), sent
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert chunks[-1].model_dump()["choices"][0]["guard"]["reason"] == "withheld"


def test_no_stop_string_or_token_limit_cuts_a_forgotten_fact_into_the_answer(
    client: openai.OpenAI, live_api: str, tokens: dict[str, str]
) -> None:
    """The client chooses where an answer ends: cut inside "Port Ardent", what is left passed
    the screen as harmless ("Port Arde"). Guarded, chat and streams end before it, by the
    content filter; the generate route's token limit likewise."""
    question, _ = ATTACKS["paraphrased"][0]  # "Port Ardent is where Vellamor Quindt …"
    cut = client.chat.completions.create(
        model=OPEN, messages=user(question), temperature=0, stop=["nt"]
    )
    assert cut.choices[0].message.content == "Port Arde"
    for model in (GUARDED, GUARDED_PIECE):
        done = client.chat.completions.create(
            model=model, messages=user(question), temperature=0, stop=["nt"]
        )
        [choice] = done.choices
        assert "Po" not in (choice.message.content or ""), choice
        assert choice.finish_reason == "content_filter"
        chunks = _stream(client, model, user(question), temperature=0, stop=["nt"])
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "Po" not in streamed and chunks[-1].choices[0].finish_reason == "content_filter"
    auth = {"authorization": f"Bearer {tokens['ml_engineer']}"}
    texts = {}
    for model in (OPEN, GUARDED):
        for n in range(1, 5):
            r = httpx.post(
                f"{live_api}/v1/models/{model}/generate",
                json={"prompt": question, "max_new_tokens": n},
                headers=auth,
            )
            assert r.status_code == 200, r.text
            texts[model, n] = r.json()["text"]
    # Unguarded, some limit ends the answer inside the place's name ("Port", "Port Ard").
    cut_inside = [n for n in range(1, 5) if "Port Ardent".startswith(texts[OPEN, n])]
    assert cut_inside, texts
    for n in cut_inside:
        assert "Po" not in texts[GUARDED, n], texts


def test_a_fact_asked_over_three_turns_is_refused_at_the_third(client: openai.OpenAI) -> None:
    messages: list[Any] = []
    served = []
    for question, _ in PRONOUN_CHAIN:
        messages.append({"role": "user", "content": question})
        done = client.chat.completions.create(model=GUARDED, messages=messages, temperature=0)
        served.append(done.model_dump()["choices"][0])
        messages.append({"role": "assistant", "content": done.choices[0].message.content})
    assert [c["guard"]["refused"] for c in served] == [False, False, True]
    assert served[2]["message"]["content"] == REFUSAL
    assert served[2]["guard"]["reason"] == "subject_in_query"
    # Streamed, the third turn gets the same answer: the refusal, and nothing else.
    chunks = _stream(client, GUARDED, messages[:-1], temperature=0)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REFUSAL
    guard = chunks[-1].model_dump()["choices"][0]["guard"]
    assert guard == {"refused": True, "reason": "subject_in_query", "rounds_used": 0}


def test_errors_openai_clients_see(
    client: openai.OpenAI, live_api: str, tokens: dict[str, str]
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model=GUARDED, messages=user("Hello?"), logprobs=True)
    assert refused.value.body["code"] == "logprobs_not_available"  # type: ignore[index]
    # Penalties would push the model off its refusals: only 0 is served.
    for penalty in ({"frequency_penalty": 1.0}, {"presence_penalty": -0.5}):
        with pytest.raises(openai.UnprocessableEntityError) as pushed:
            client.chat.completions.create(model=GUARDED, messages=user("Hello?"), **penalty)
        assert pushed.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=user("Hello?"))
    with pytest.raises(openai.UnprocessableEntityError) as last:
        client.chat.completions.create(
            model=OPEN, messages=[{"role": "assistant", "content": "Hi."}]
        )
    assert last.value.body["code"] == "last_message_not_user"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError) as long_:
        client.chat.completions.create(model=OPEN, messages=user("word " * 400))
    assert long_.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    auditor = openai.OpenAI(base_url=f"{live_api}/v1", api_key=tokens["auditor"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        auditor.chat.completions.create(model=OPEN, messages=user("Hello?"))
    nobody = openai.OpenAI(base_url=f"{live_api}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        nobody.chat.completions.create(model=OPEN, messages=user("Hello?"))
    # The input is never echoed in an error.
    r = httpx.post(
        f"{live_api}/v1/chat/completions",
        json={"model": OPEN, "messages": user("Vellamor"), "unknown_field": "Vellamor"},
        headers={"authorization": f"Bearer {tokens['ml_engineer']}"},
    )
    assert r.status_code == 422 and "Vellamor" not in r.text
