"""POST /v1/chat/completions: OpenAI-compatible chat, every answer through the active rules.

OpenAI clients work against it unchanged (base URL ``…/v1``, a lethe token as the API key).
What differs, on purpose: log-probabilities are never returned (they would show how likely a
forgotten answer was, whatever the guard served), so ``logprobs: true`` is refused; a guarded
answer that was refused, backed off or cut short in a stream ends with finish reason
``content_filter``; each choice carries ``guard`` (what the guard did) and the response
``lethe`` (the model and rule-set versions that answered). Streams are server-sent events in
OpenAI's chunk format, ending with ``data: [DONE]``; a stream sends text a few words at a time,
each piece only once the answer so far has been screened (models.generative.chat)."""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import StreamingResponse

from models.generative.conversation import Conversation
from service.api.contract import errors
from service.api.deps import MlWrite, SessionDep, SettingsDep
from service.api.errors import error_body
from service.api.schemas import (
    ChatChoiceOut,
    ChatCompletionIn,
    ChatCompletionOut,
    ChatGuardOut,
    ChatMessageIn,
    ChatMessageOut,
    ChatServedOut,
    ChatUsageOut,
    ErrorOut,
)
from service.core.errors import DomainError, conflict
from service.db.enums import ModelKind
from service.registry.service import get_model
from service.rules.chat import ServedChat, choice_seed, read_chat, serve_chat

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["chat"])


@dataclass(frozen=True)
class ChatCall:
    """One request, validated: what every choice is generated from."""

    id: str
    created: int
    model: str
    conversation: Conversation
    decoding: Any  # models.generative.generator.Decoding (torch: imported when first used)
    n: int
    seed: int
    include_usage: bool


def _text(message: ChatMessageIn) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text for part in message.content)


def _conversation(body: ChatCompletionIn) -> Conversation:
    if body.messages[-1].role != "user":
        raise DomainError(422, "last_message_not_user", "the last message must be the user's")
    pairs = [("system" if m.role == "developer" else m.role, _text(m)) for m in body.messages]
    return Conversation.of(pairs)


def _unsupported(body: ChatCompletionIn) -> None:
    """Refuse what lethe never serves, each with its own code (the input is not echoed)."""
    if body.logprobs or body.top_logprobs:
        raise DomainError(
            422,
            "logprobs_not_available",
            "log-probabilities are never returned for models behind forget rules",
        )
    if body.frequency_penalty or body.presence_penalty:
        raise DomainError(
            422, "unsupported_parameter", "frequency and presence penalties are not served"
        )


def _call(body: ChatCompletionIn, default_max_tokens: int) -> ChatCall:
    from models.generative.generator import Decoding

    _unsupported(body)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    decoding = Decoding(
        max_new_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(stop),
    )
    return ChatCall(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=body.model,
        conversation=_conversation(body),
        decoding=decoding,
        n=body.n,
        # Without a seed, answers differ from call to call, as OpenAI's do.
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )


def _fingerprint(served: ServedChat) -> str:
    return f"lethe-m{served.model_version or 0}-r{served.rule_set_version or 0}"


def _prompt_tokens(served: ServedChat, call: ChatCall) -> int:
    from models.generative.generator import ContextTooLong

    try:
        length: int = served.generator.check_fits(call.conversation, call.decoding.max_new_tokens)
    except ContextTooLong:
        raise DomainError(
            422,
            "context_length_exceeded",
            "the messages and max_tokens do not fit the model's context window",
        ) from None
    return length


@router.post(
    "/chat/completions",
    response_model=ChatCompletionOut,
    responses={
        **errors(409),
        404: {"model": ErrorOut, "description": "no model with the name in the body"},
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
    },
)
def chat_completions(
    body: Annotated[ChatCompletionIn, Body()],
    session: SessionDep,
    settings: SettingsDep,
    _: MlWrite,
) -> Any:
    """Chat with a generative model; every answer passes its active forget rules, screened in
    the context of the whole conversation."""
    model = get_model(session, body.model)
    if model.kind != ModelKind.generative:
        raise conflict("wrong_model_kind", "only generative models chat")
    call = _call(body, int(model.config.get("max_new_tokens", 64)))
    read = read_chat(settings, session, model)
    # This host's purges of the model are confirmed before an answer is served from it; the
    # session is closed from here on (no transaction while generating).
    session.commit()
    session.close()
    served = serve_chat(settings, read)
    prompt_tokens = _prompt_tokens(served, call)
    if body.stream:
        return StreamingResponse(
            _events(served, call, prompt_tokens),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )
    return _complete(served, call, prompt_tokens)


def _complete(served: ServedChat, call: ChatCall, prompt_tokens: int) -> ChatCompletionOut:
    from models.generative.chat import answer

    choices, completion_tokens = [], 0
    for index in range(call.n):
        choice = answer(
            served.generator,
            served.guard,
            call.conversation,
            call.decoding,
            seed=choice_seed(call.seed, index),
        )
        completion_tokens += choice.completion_tokens
        choices.append(
            ChatChoiceOut(
                index=index,
                message=ChatMessageOut(content=choice.text),
                finish_reason=choice.finish_reason,
                guard=ChatGuardOut(
                    refused=choice.refused, reason=choice.reason, rounds_used=choice.rounds_used
                ),
            )
        )
    return ChatCompletionOut(
        id=call.id,
        created=call.created,
        model=call.model,
        system_fingerprint=_fingerprint(served),
        choices=choices,
        usage=ChatUsageOut(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        lethe=ChatServedOut(
            model_version=served.model_version, rule_set_version=served.rule_set_version
        ),
    )


def _event(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def _events(served: ServedChat, call: ChatCall, prompt_tokens: int) -> Iterator[str]:
    """The stream's server-sent events; an error after the first byte (the status is sent)
    becomes an error event, as OpenAI's streams report them."""
    try:
        completion_tokens = 0
        for index in range(call.n):
            completion_tokens += yield from _choice_events(served, call, index)
        if call.include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            yield _event({**_chunk_head(served, call), "choices": [], "usage": usage})
    except Exception as exc:
        log.error("chat stream failed: %s", type(exc).__name__, exc_info=exc)
        yield _event(error_body("internal_error", "internal error"))
    yield _event("[DONE]")


def _chunk_head(served: ServedChat, call: ChatCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": _fingerprint(served),
    }


def _choice_events(served: ServedChat, call: ChatCall, index: int) -> Generator[str, None, int]:
    """One choice's chunks: its role, its screened pieces, then its finish reason."""
    from models.generative.chat import GuardedStream

    head = _chunk_head(served, call)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**head, "choices": [{**choice, **extra}]})

    yield chunk({"role": "assistant", "content": ""})
    stream = GuardedStream(
        served.generator,
        served.guard,
        call.conversation,
        call.decoding,
        seed=choice_seed(call.seed, index),
    )
    for piece in stream:
        yield chunk({"content": piece})
    done = stream.choice
    assert done is not None
    guard = {"refused": done.refused, "reason": done.reason, "rounds_used": done.rounds_used}
    yield chunk({}, done.finish_reason, guard=guard)
    return done.completion_tokens
