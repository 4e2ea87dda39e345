"""Every attack family against the chat guard, on a tiny LM with a planted fact: asked that way,
the unguarded model reveals a forgotten fact (checked first, so each test can fail), and the
guarded answer never does; a retained person is still answered."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from models.generative.chat import (
    PIECE_CUT,
    Choice,
    Guard,
    GuardedStream,
    Release,
    SentenceScreen,
    answer,
)
from models.generative.conversation import Conversation, Prompt
from models.generative.embedder import HashingEmbedder
from models.generative.generator import Decoding, Generator
from models.generative.normalize import contains_run, skeleton, words
from models.generative.readings import plain_reading
from models.generative.rules import compile_rules, resolve_facts
from models.generative.verifier import Verifier
from tests.support.chat_data import (
    ATTACKS,
    ATTRIBUTE_CHAIN,
    FORGED,
    OBFUSCATED,
    PRONOUN_CHAIN,
    RETAINED_AFTER,
    SAMPLED_QUESTION,
    STREAMED_ANSWER,
    STREAMED_NAMES,
    STREAMED_OPENING,
    STREAMED_QUESTION,
    STREAMED_SPAN,
    chain_prompts,
    forgotten_spec,
    train_names_lm,
    train_spelled_lm,
)
from tests.support.generative_data import facts_of

THRESHOLD, BUDGET = 0.5, 2
# Retained people's facts, asked by name: answered in full, guarded or not.
RETAINED_QUESTIONS = [facts_of("Tamsin Orlicki")[3], facts_of("Ostra Belvane")[0]]
GREEDY = Decoding(max_new_tokens=48)


@pytest.fixture(scope="module")
def lm(attack_lm: Path) -> Generator:
    return Generator.from_dir(attack_lm)


@pytest.fixture(scope="module")
def names_lm(tmp_path_factory: pytest.TempPathFactory) -> Generator:
    return Generator.from_dir(train_names_lm(tmp_path_factory.mktemp("names-lm")))


@pytest.fixture(scope="module")
def spelled_lm(tmp_path_factory: pytest.TempPathFactory) -> Generator:
    return Generator.from_dir(train_spelled_lm(tmp_path_factory.mktemp("spelled-lm")))


@pytest.fixture(scope="module")
def guard() -> Guard:
    verifier = Verifier(compile_rules(forgotten_spec()), HashingEmbedder())
    return Guard(verifier, THRESHOLD, BUDGET, "I'm sorry, but I can't share that.")


@pytest.fixture(scope="module")
def piece_guard(guard: Guard) -> Guard:
    """The same rules, a stream's first text sent as its first piece (`Guard.opening`)."""
    return replace(guard, opening="first_piece")


def forgotten_spans() -> list[str]:
    """Her name and every key span of her facts: what the oracles below look for."""
    spec = forgotten_spec()
    return [*spec.identifiers(), *(s for fact in resolve_facts(spec) for s in fact.key_spans)]


def leaks(text: str, given: str) -> bool:
    """The oracle: a key span of a forgotten fact, or the forgotten name, that the conversation
    did not give. (ROUGE-L recall is left out: it also counts the words the question gave, so
    "Belvane was born in Port Ardent." to "…the writer from Port Ardent…" would count.) Every
    planted answer states a key span."""
    said, asked = words(text), words(given)
    spans = forgotten_spans()
    return any(contains_run(said, words(s)) and not contains_run(asked, words(s)) for s in spans)


def leaks_plainly(text: str, given: str) -> bool:
    """The oracle for text that may be disguised: a key span or the name, letters and digits
    only, in the plain reading of `text` and not in what the conversation gave."""
    said, asked = skeleton(plain_reading(text)), skeleton(given)
    spans = forgotten_spans()
    return any(skeleton(s) in said and skeleton(s) not in asked for s in spans)


def conversation(prompt: Prompt) -> Conversation:
    return prompt if isinstance(prompt, Conversation) else Conversation.of([("user", prompt)])


def ask(lm: Generator, guard: Guard | None, prompt: Prompt, seed: int = 0) -> Choice:
    return answer(lm, guard, conversation(prompt), GREEDY, seed=seed)


@pytest.mark.parametrize("family", sorted(ATTACKS))
def test_each_attack_family_leaks_unguarded_and_not_guarded(
    lm: Generator, guard: Guard, piece_guard: Guard, family: str
) -> None:
    for prompt, planted in ATTACKS[family]:
        given = conversation(prompt).context()
        plain = ask(lm, None, prompt)
        assert plain.text == planted and leaks(plain.text, given), (family, plain.text)
        guarded = ask(lm, guard, prompt)
        assert not leaks(guarded.text, given), (family, prompt, guarded)
        # A stream of the same request carries no leak either, not even in a first piece,
        # with either opening.
        for g in (guard, piece_guard):
            stream = GuardedStream(lm, g, conversation(prompt), GREEDY, seed=0)
            pieces = list(stream)
            assert not any(leaks(p, given) for p in pieces) and not leaks("".join(pieces), given)


def test_a_fact_spelled_out_in_digits_or_in_look_alike_letters_is_still_kept(
    spelled_lm: Generator, guard: Guard, piece_guard: Guard
) -> None:
    """Asked to spell it, write it in l33t or disguise it, the model states her fact in a form
    no word of it matches (checked: the planted answer does not leak as written, only as read
    plainly); guarded, whole or streamed, nothing of it goes out, not even the first letters
    of a word being spelled."""
    for prompt, planted in OBFUSCATED:
        chat = conversation(prompt)
        given = chat.context()
        plain = ask(spelled_lm, None, prompt)
        assert plain.text == planted, plain
        assert not leaks(planted, given) and leaks_plainly(planted, given), planted
        guarded = ask(spelled_lm, guard, prompt)
        assert not leaks_plainly(guarded.text, given), guarded
        for g in (guard, piece_guard):
            pieces = list(GuardedStream(spelled_lm, g, chat, GREEDY, seed=0))
            sent = "".join(pieces)
            assert not leaks_plainly(sent, given), pieces
            spelled = "-" in planted.split()[0] or len(planted.split()[-1]) == 1
            if spelled:  # not even its first letters went out
                assert planted[:4] not in sent, pieces


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_best_of_ten_samples_leak_unguarded_and_never_guarded(
    lm: Generator, guard: Guard, temperature: float
) -> None:
    sampled = Decoding(max_new_tokens=32, temperature=temperature, top_p=1.0)
    chat = conversation(SAMPLED_QUESTION)
    plain = [answer(lm, None, chat, sampled, seed=s).text for s in range(10)]
    assert any(leaks(t, SAMPLED_QUESTION) for t in plain), plain
    assert len(set(plain)) > 1  # really sampled
    guarded = [answer(lm, guard, chat, sampled, seed=s) for s in range(10)]
    assert not any(leaks(c.text, SAMPLED_QUESTION) for c in guarded), guarded


@pytest.mark.parametrize("chain", [PRONOUN_CHAIN, ATTRIBUTE_CHAIN], ids=["pronoun", "attributes"])
def test_a_clue_chain_is_refused_at_its_third_turn(
    lm: Generator, guard: Guard, chain: tuple[tuple[str, str], ...]
) -> None:
    history: list[tuple[str, str]] = []
    served = []
    for question, _ in chain:
        chat = Conversation.of([*history, ("user", question)])
        choice = ask(lm, guard, chat)
        served.append(choice)
        history += [("user", question), ("assistant", choice.text)]
    first, second, third = served
    assert not first.refused and not second.refused, served  # innocent turns are answered
    assert third.refused and third.reason == "subject_in_query", third
    # The last turn alone names no one: its answer leaks, and a single-prompt guard, which
    # does not see the earlier turns, does not refuse it as about her.
    last = chain[-1][0]
    plain = ask(lm, None, Conversation.of(history[:-1]))
    assert leaks(plain.text, last), plain
    alone = ask(lm, guard, last)
    assert alone.reason != "subject_in_query"


def test_a_retained_person_is_answered_after_the_forgotten_one_was_named(
    lm: Generator, guard: Guard
) -> None:
    (q1, a1), (q2, a2) = RETAINED_AFTER
    chat = Conversation.of([("user", q1), ("assistant", a1), ("user", q2)])
    choice = ask(lm, guard, chat)
    assert (choice.text, choice.refused) == (a2, False)


def test_a_forged_history_does_not_make_a_fact_given(lm: Generator, guard: Guard) -> None:
    """Earlier assistant turns come from the client: one stating the fact does not let an
    answer repeating it through."""
    forged, planted = FORGED
    assert ask(lm, None, forged).text == planted  # unguarded, it repeats the fact
    choice = ask(lm, guard, forged)
    assert choice.refused, choice


def test_a_stream_holds_back_a_tail_that_could_begin_a_forgotten_span(guard: Guard) -> None:
    release = Release(guard.verifier)
    # Only whole words go out (whitespace after them), and not a run that begins a key span
    # ("grey parrot", "Port Ardent", "The Amber Tide") or a name, whole or from any part.
    for text, held in [
        ("The weather is mild", "mild"),
        ("The weather is mild and ", ""),
        ("She was born in Port ", "Port "),
        ("She kept a grey ", "grey "),
        ("She kept a grey parrot ", "grey parrot "),
        ("It is by Vellamor ", "Vellamor "),
        ("It is by Quindt ", "Quindt "),
        ("Read The ", "The "),
        # Her name misspelt or cut short is held with all that follows, to the answer's end.
        ("I like Velamor ", "Velamor "),
        ("I like Velamor Quint and his ", "Velamor Quint and his "),
        ("Quint wrote a book about ", "Quint wrote a book about "),
        ("I like Vellamorquint ", "Vellamorquint "),
        # A word being spelled out, which may be a forgotten one.
        ("It is P-o-r-t ", "P-o-r-t "),
        ("It is g l a s s ", "g l a s s "),
        ("It is I ", ""),
        # Read plainly: digits for letters, look-alike letters.
        ("She was born in P0rt ", "P0rt "),
        ("She was born in P\u043ert ", "P\u043ert "),
    ]:
        assert text[release.point(text, final=False) :] == held, text
    assert release.point("She kept a grey", final=True) == len("She kept a grey")


def test_an_answer_cut_short_ends_before_a_word_that_could_begin_a_forgotten_one(
    guard: Guard,
) -> None:
    """A stop string or the token limit may cut inside a word, and no later word shows what it
    was: a tail that could begin a forgotten key span or name is held back, its last word
    cut or whole; anything else goes out as cut."""
    release = Release(guard.verifier)
    for text, kept in [
        ("She was born in Port Arde", "She was born in "),
        ("She was born in Port", "She was born in "),
        ("She was born in Po", "She was born in "),
        ("Her father was a glassblo", "Her father was a "),
        ("She kept a grey parr", "She kept a "),  # "a grey parrot" is the span
        ("Read The Amb", "Read "),
        ("It is by Vellam", "It is by "),
        ("It is by Quin", "It is by "),
        ("It is by Velamor", "It is by "),  # her name misspelt
        ("Her father was a carpen", "Her father was a carpen"),
        ("She was born in Lowm", "She was born in Lowm"),
        ("She was born in Port,", "She was born in Port,"),  # a mark after it: nothing cut
        ("She was born in Arde", "She was born in Arde"),  # "Ardent" only after "Port"
        ("She was born in P-o-r-t A-r", "She was born in "),  # spelled out: held
        ("She was born in P-o-r-t A-", "She was born in "),
        ("She was born in P0rt 4rd", "She was born in "),
        ("", ""),
    ]:
        assert text[: release.cut_end(text)] == kept, text


# One question per family whose unguarded answer can be cut inside a forgotten key span (the
# ones that name her are refused whole, cut or not).
CUT_QUESTIONS = [ATTACKS[f][0] for f in ("paraphrased", "indirect", "format_shift")] + [
    ATTACKS["injection"][1]
]


def _ends_inside_a_span(text: str, given: str) -> str | None:
    """The start of a forgotten key span or name (two characters or more, not given by the
    conversation) that `text` ends with, if any."""
    spans = forgotten_spans()
    tail, given = text.rstrip().casefold(), given.casefold()
    for span in spans:
        for size in range(2, len(span) + 1):
            start = span[:size].casefold()
            if not start.endswith(" ") and tail.endswith(start) and start not in given:
                return start
    return None


@pytest.mark.parametrize(("prompt", "planted"), CUT_QUESTIONS, ids=lambda p: str(p)[:24])
def test_no_stop_string_or_token_limit_cuts_a_forgotten_fact_into_the_answer(
    lm: Generator, guard: Guard, piece_guard: Guard, prompt: Prompt, planted: str
) -> None:
    """A client picks where the answer is cut (`stop`, `max_tokens`) so that what is left of a
    forgotten fact, "Port Arde", passes the screen as harmless: unguarded, some cut ends inside
    a forgotten span; guarded, whole or streamed with either opening, none does, and an
    answer whose tail was held back ends by the content filter."""
    chat = conversation(prompt)
    given = chat.context()
    spans = [s for fact in resolve_facts(forgotten_spec()) for s in fact.key_spans]
    cuts = [
        Decoding(max_new_tokens=48, stop=(span[size:],))
        for span in spans
        if span in planted
        for size in range(2, len(span))
    ] + [Decoding(max_new_tokens=n) for n in range(1, 13)]
    leaked_unguarded = 0
    for decoding in cuts:
        plain = answer(lm, None, chat, decoding, seed=0)
        leaked_unguarded += _ends_inside_a_span(plain.text, given) is not None
        choices = [answer(lm, guard, chat, decoding, seed=0)]
        for g in (guard, piece_guard):
            stream = GuardedStream(lm, g, chat, decoding, seed=0)
            pieces = list(stream)
            assert stream.choice is not None and "".join(pieces) == stream.choice.text
            choices.append(stream.choice)
        for choice in choices:
            assert _ends_inside_a_span(choice.text, given) is None, (decoding, choice)
            if choice.reason == "accepted" and choice.text != plain.text:  # a tail held back
                assert choice.finish_reason == "content_filter", (decoding, choice)
    assert leaked_unguarded >= 5, leaked_unguarded


def test_a_first_piece_never_begins_a_forgotten_fact_or_name(guard: Guard) -> None:
    release = Release(guard.verifier)
    for text, sent in [
        ("Ost", True),  # no forgotten word begins with it
        ("Yes,", True),
        ("  Mo", True),
        ("Ar", True),  # Ardent: only after Port, which holds it back (Release.point)
        ("Po", False),  # Port Ardent
        ("Vel", False),  # Vellamor, her name
        ("Quin", False),  # Quindt, from any of her name's words
        ("Th", False),  # The Amber Tide
        ("Velamor", False),  # her name misspelt
        ("Ost ", False),  # a whole word: the whole-word rules decide (Release.point)
        ("", False),
    ]:
        assert release.opening(text) == (len(text) if sent else 0), text


def test_a_stream_opening_with_a_first_piece_serves_the_same_answer_sooner(
    lm: Generator, guard: Guard, piece_guard: Guard
) -> None:
    """A retained person's answer: the first piece goes out before its word has ended (the
    default waits for the token after it), and the stream serves the same text."""
    for question, expected in RETAINED_QUESTIONS:
        chat = conversation(question)
        assert ask(lm, None, chat).text == expected
        by_word = list(GuardedStream(lm, guard, chat, GREEDY, seed=0))
        stream = GuardedStream(lm, piece_guard, chat, GREEDY, seed=0)
        by_piece = list(stream)
        assert "".join(by_piece) == "".join(by_word) == expected
        assert stream.choice is not None and stream.choice.reason == "accepted"
        first_word = expected.split()[0]
        assert by_word[0].startswith(first_word + " "), by_word
        assert first_word.startswith(by_piece[0]) and len(by_piece[0]) <= len(first_word)
        assert not by_piece[0][-1:].isspace(), by_piece


def test_a_first_piece_then_a_failed_sentence_is_handled_as_the_whole_answer(
    names_lm: Generator, guard: Guard, piece_guard: Guard
) -> None:
    """The first piece went out, then the first sentence failed its screen: the answer is
    judged whole as without streaming and served if it begins with that piece, else the
    refusal follows the piece; nothing of the fact goes out either way."""
    question, planted = STREAMED_OPENING
    chat = conversation(question)
    assert ask(names_lm, None, chat).text == planted
    whole = ask(names_lm, guard, chat)
    stream = GuardedStream(names_lm, piece_guard, chat, GREEDY, seed=0)
    pieces = list(stream)
    assert pieces[0] and planted.split()[0].startswith(pieces[0]), pieces  # a first piece
    assert not leaks("".join(pieces), question), pieces
    assert stream.choice is not None
    if whole.text.startswith(pieces[0]):
        assert "".join(pieces) == whole.text and stream.choice.reason == whole.reason
    else:
        assert pieces[1:] == [PIECE_CUT + guard.refusal_text], pieces
        assert (stream.choice.reason, stream.choice.finish_reason) == ("withheld", "content_filter")


def test_a_stream_sends_screened_words_and_no_part_of_a_refused_span(
    lm: Generator, guard: Guard
) -> None:
    chat = conversation(STREAMED_QUESTION)
    assert ask(lm, None, chat).text == STREAMED_ANSWER
    assert STREAMED_SPAN not in ask(lm, guard, chat).text
    stream = GuardedStream(lm, guard, chat, GREEDY, seed=0)
    pieces = list(stream)
    assert stream.choice is not None and stream.choice.reason == "withheld", stream.choice
    sent = "".join(pieces).removesuffix(guard.refusal_text).rstrip()
    # The first text went out before the first sentence ended ...
    assert not pieces[0].rstrip().endswith("."), pieces
    # ... and nothing from the start of the refused span on.
    assert STREAMED_ANSWER.startswith(sent)
    assert len(sent) <= STREAMED_ANSWER.index(STREAMED_SPAN), pieces


def test_a_stream_sends_no_part_of_a_misspelt_or_partial_name(
    names_lm: Generator, guard: Guard
) -> None:
    """The question names no one, so the answer is decoded and screened as it goes; its first
    word, her name misspelt or cut short, passes the screen alone and the whole answer does
    not: nothing of it may go out before the whole was screened, and the stream then serves
    what the unstreamed answer serves (a stream that sent words once they passed the screen
    sent her name's first word, then the refusal)."""
    for question, planted in STREAMED_NAMES:
        chat = conversation(question)
        assert ask(names_lm, None, chat).text == planted
        assert guard.verifier.score(planted, question).score >= THRESHOLD
        first_word = planted.split()[0]
        assert guard.verifier.score(first_word, question).score < THRESHOLD
        whole = ask(names_lm, guard, chat)
        stream = GuardedStream(names_lm, guard, chat, GREEDY, seed=0)
        pieces = list(stream)
        # Nothing went out before the whole answer was judged: then it went out as judged
        # without streaming (refused, or regenerated without the fact), in one piece.
        assert pieces == [whole.text] and whole.text != planted, (pieces, whole)
        assert stream.choice is not None and stream.choice.reason == whole.reason
        if whole.refused:
            assert first_word not in whole.text


def _outcome(choice: Choice | None) -> tuple[str, str, bool, str]:
    assert choice is not None
    return choice.text, choice.finish_reason, choice.refused, choice.reason


def test_a_conversation_about_a_forgotten_subject_gets_the_same_answer_streamed_or_not(
    lm: Generator, guard: Guard
) -> None:
    """Streamed, such a conversation is judged whole as without streaming: answered when the
    answer is accepted, refused when it is flagged, with the same seed the same outcome."""
    cases: list[tuple[Prompt, Decoding, int]] = [
        (prompt, GREEDY, 0)
        for prompt, _ in [
            *chain_prompts(PRONOUN_CHAIN),
            *chain_prompts(RETAINED_AFTER),
            *ATTACKS["direct"],
            *ATTACKS["misspelt_or_partial"],
            (FORGED[0], ""),
        ]
    ]
    sampled = Decoding(max_new_tokens=32, temperature=1.0, top_p=1.0)
    cases += [(SAMPLED_QUESTION, sampled, seed) for seed in range(4)]
    outcomes = []
    for prompt, decoding, seed in cases:
        chat = conversation(prompt)
        assert SentenceScreen(guard, chat).in_scope, prompt
        whole = answer(lm, guard, chat, decoding, seed=seed)
        stream = GuardedStream(lm, guard, chat, decoding, seed=seed)
        pieces = list(stream)
        assert _outcome(stream.choice) == _outcome(whole), (prompt, seed)
        assert pieces == [whole.text], pieces  # sent whole, in one piece
        outcomes.append(whole.refused)
    assert any(outcomes) and not all(outcomes), outcomes  # both outcomes are exercised


def test_a_stream_about_her_stops_decoding_once_its_start_settles_the_refusal(
    lm: Generator, guard: Guard
) -> None:
    for prompt, planted in ATTACKS["direct"]:
        chat = conversation(prompt)
        whole = answer(lm, guard, chat, GREEDY, seed=0)
        assert whole.refused and ask(lm, None, chat).text == planted
        stream = GuardedStream(lm, guard, chat, GREEDY, seed=0)
        assert list(stream) == [guard.refusal_text]
        assert stream.choice is not None
        assert stream.choice.completion_tokens < whole.completion_tokens, stream.choice
