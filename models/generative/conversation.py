"""A chat conversation as the guard reads it: every turn, in order, is context.

A single-prompt guard judges an answer against the question it answers: whom it is about (a
forgotten subject named, or described by several of her attributes) and which of her key spans
the asker already gave. In a conversation the question that settles whom is often an earlier
turn ("Tell me about Vellamor Quindt." … "Where was she born?"), and a clue chain spreads the
attributes over several innocent-looking turns ("Who wrote The Amber Tide?" … "Where was that
author born?" … "And the author's father's job?"). So the guard reads the whole conversation,
every role's turns joined in order, wherever the single-prompt guard reads the prompt:

- a subject identified anywhere in it (by name, a distinctive part of the name, or by her
  attributes together, across turns) keeps every later turn in scope, whatever pronoun or
  description the later turn uses: the scope never narrows again within a conversation, which
  keeps the guard conservative when a conversation moves on to someone else;
- a key span counts as given only when some turn states it (the client sends the whole
  history, its own earlier answers included, so nothing outside the messages is trusted).

The model itself receives the messages as they are (`Generator.encode_prompt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Conversation:
    """The messages of one chat request, oldest first; the last one is the user's."""

    messages: tuple[Message, ...]

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a conversation has at least one message")
        if self.messages[-1].role != "user":
            raise ValueError("the last message of a conversation is the user's")
        if any(m.role not in ROLES for m in self.messages):
            raise ValueError("message roles are system, user or assistant")

    @classmethod
    def of(cls, pairs: Sequence[tuple[str, str]]) -> Conversation:
        """From (role, content) pairs."""
        return cls(tuple(Message(cast(Role, role), content) for role, content in pairs))

    @property
    def last_user(self) -> str:
        return self.messages[-1].content

    def context(self) -> str:
        """The text the guard screens an answer against: every turn, in order, one per line
        (a turn's own sentence breaks are kept, so sentence-level scoring still works)."""
        return "\n".join(m.content for m in self.messages if m.content.strip())

    def chat_messages(self, instruction: str | None = None) -> list[dict[str, str]]:
        """The messages as a chat template takes them; `instruction` (refinement's feedback)
        goes first in the system message, before any system message of the caller's."""
        out = [{"role": m.role, "content": m.content} for m in self.messages]
        if not instruction:
            return out
        if out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{instruction}\n\n{out[0]['content']}"}
        else:
            out.insert(0, {"role": "system", "content": instruction})
        return out


Prompt = str | Conversation
"""What a generator answers: one question, or a conversation."""


def screen_text(prompt: Prompt) -> str:
    """What the guard reads for whom an answer is about and what the asker gave."""
    return prompt.context() if isinstance(prompt, Conversation) else prompt
