"""Tests of adasr.stream: chunkers, arrival schedules, scheduled and live sources.

No model is loaded: token-based chunkers use tiny tokenizers built in-process.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from adasr.errors import InputError
from adasr.stream import (
    CHUNKERS,
    Chunk,
    LiveSource,
    ScheduledStream,
    VirtualClock,
    async_source,
    cap_chunk_tokens,
    chunk_text,
    explicit_schedule,
    file_text,
    make_stream,
    split_clauses,
    split_sentences,
    split_tokens,
    split_words,
    stdin_source,
    words_per_second_schedule,
)

CORPUS = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May? Weng earns $12 an "
    "hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did "
    "she earn? Betty is saving money for a new wallet which costs $100.50 in total!"
)


def _squash(s: str) -> str:
    return "".join(s.split())


@pytest.fixture(scope="module")
def word_tok():
    """Word-level tokenizer: one token per word or punctuation mark (exact counts)."""
    words = sorted({w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(CORPUS)})
    vocab = {w: i for i, w in enumerate(["[UNK]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512)


@pytest.fixture(scope="module")
def bpe_tok():
    """Byte-level BPE (GPT-2 style, leading-space tokens) trained in-process in milliseconds."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([CORPUS] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512)


def _ntok(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False, verbose=False)["input_ids"])


# --- sentence chunker ---------------------------------------------------------------------


def test_sentences_gsm8k_question():
    assert split_sentences(CORPUS) == [
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May.",
        "How many clips did Natalia sell altogether in April and May?",
        "Weng earns $12 an hour for babysitting.",
        "Yesterday, she just did 50 minutes of babysitting.",
        "How much did she earn?",
        "Betty is saving money for a new wallet which costs $100.50 in total!",
    ]


def test_sentences_decimals_and_money():
    text = "A pen costs $3.50 and a desk $1,200.50. The rate is 0.25 per hour. Pi is 3.14159"
    assert split_sentences(text) == [
        "A pen costs $3.50 and a desk $1,200.50.",
        "The rate is 0.25 per hour.",
        "Pi is 3.14159",
    ]


def test_sentences_questions_exclamations_and_final_fragment():
    text = "Really? Yes! Wait... What?! \"Fine.\" She left and then"
    assert split_sentences(text) == [
        "Really?", "Yes!", "Wait...", "What?!", '"Fine."', "She left and then",
    ]


def test_sentences_abbreviations():
    text = (
        "Mr. Smith met Dr. Jones and J. K. Rowling at 5 p.m. on Monday. Fruits, e.g. apples, "
        "i.e. food, etc. are sold. The U.S. Army came at 6 a.m. Then it rained."
    )
    assert split_sentences(text) == [
        "Mr. Smith met Dr. Jones and J. K. Rowling at 5 p.m. on Monday.",
        "Fruits, e.g. apples, i.e. food, etc. are sold.",
        "The U.S. Army came at 6 a.m.",
        "Then it rained.",
    ]


def test_sentences_long_text_is_linear():
    text = "He paid $3.50 to Dr. Who. Then he left! " * 5000
    t0 = time.perf_counter()
    out = split_sentences(text)
    assert time.perf_counter() - t0 < 1.0
    assert len(out) == 10_000 and out[:2] == ["He paid $3.50 to Dr. Who.", "Then he left!"]


def test_sentences_newlines_and_blank():
    assert split_sentences("first line\nsecond line.\n\n  third  \r\n") == [
        "first line", "second line.", "third",
    ]
    assert split_sentences("") == []
    assert split_sentences(" \n\t ") == []


# --- word and token chunkers ---------------------------------------------------------------


def test_split_words():
    assert split_words("one two  three\nfour five") == ["one", "two", "three", "four", "five"]
    assert split_words("one two three four five", 2) == ["one two", "three four", "five"]
    assert split_words("   ") == []
    for bad in (0, -1, 1.5):
        with pytest.raises(InputError, match="words_per_chunk"):
            split_words("a b", bad)


def test_split_tokens_exact_counts(word_tok):
    chunks = split_tokens(CORPUS, word_tok, 7)
    counts = [_ntok(word_tok, c) for c in chunks]
    assert counts[:-1] == [7] * (len(chunks) - 1) and 1 <= counts[-1] <= 7
    assert sum(counts) == _ntok(word_tok, CORPUS)
    assert _squash(" ".join(chunks)) == _squash(CORPUS)
    assert chunks[0] == "Natalia sold clips to 48 of her"


def test_split_tokens_round_trip_bpe(bpe_tok):
    text = CORPUS + "\nA second line with café and naïve words."
    for n in (1, 3, 16):
        chunks = split_tokens(text, bpe_tok, n)
        assert all(c == c.strip() and c for c in chunks)
        assert _squash(" ".join(chunks)) == _squash(text)
    assert split_tokens("  ", bpe_tok, 4) == []
    with pytest.raises(InputError, match="tokens_per_chunk"):
        split_tokens(text, bpe_tok, 0)


def test_split_tokens_raw_tokenizers_object(word_tok):
    raw = word_tok.backend_tokenizer  # a bare `tokenizers.Tokenizer` works too
    assert split_tokens(CORPUS, raw, 7) == split_tokens(CORPUS, word_tok, 7)
    assert cap_chunk_tokens([CORPUS], raw, 7) == split_tokens(CORPUS, word_tok, 7)


class _SlowCharTokenizer:
    """A tokenizer without offsets (like a slow HF tokenizer): one id per character."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_split_tokens_decode_fallback():
    assert split_tokens("abcdefg hi", _SlowCharTokenizer(), 3) == ["abc", "def", "g h", "i"]


# --- token cap -----------------------------------------------------------------------------


def test_cap_keeps_short_chunks(word_tok):
    chunks = split_sentences(CORPUS)
    assert cap_chunk_tokens(chunks, word_tok, 1000) == chunks


def test_cap_splits_100k_char_sentence_fast(word_tok, bpe_tok):
    words = CORPUS.replace(".", "").replace("?", "").replace("!", "").split()
    text = " ".join(words[i % len(words)] for i in range(25_000))[:100_000].rsplit(" ", 1)[0]
    assert len(text) > 99_000 and len(split_sentences(text)) == 1
    for tok in (word_tok, bpe_tok):
        t0 = time.perf_counter()
        pieces = cap_chunk_tokens(["short one.", text], tok, 64)
        elapsed = time.perf_counter() - t0
        assert elapsed < 3.0, f"cap took {elapsed:.2f}s"
        assert pieces[0] == "short one."
        assert len(pieces) > 100
        assert max(_ntok(tok, p) for p in pieces) <= 64
        assert _squash(" ".join(pieces[1:])) == _squash(text)


def test_cap_rejects_bad_max(word_tok):
    with pytest.raises(InputError, match="max_tokens"):
        cap_chunk_tokens(["a"], word_tok, 0)


# --- chunk_text --------------------------------------------------------------------------


def test_chunk_text(word_tok):
    assert chunk_text(CORPUS) == split_sentences(CORPUS)
    assert chunk_text("a b c", "word") == ["a", "b", "c"]
    assert chunk_text(CORPUS, "token", tokenizer=word_tok, tokens_per_chunk=5) == split_tokens(
        CORPUS, word_tok, 5
    )
    capped = chunk_text(CORPUS, tokenizer=word_tok, max_chunk_tokens=4)
    assert max(_ntok(word_tok, c) for c in capped) <= 4


def test_chunk_text_errors():
    with pytest.raises(InputError, match="unknown chunker 'para'.*sentence, clause, word, token"):
        chunk_text("hello", "para")
    assert CHUNKERS == ("sentence", "clause", "word", "token")
    for blank in ("", "   \n\t"):
        with pytest.raises(InputError, match="^the input is empty"):
            chunk_text(blank)
    with pytest.raises(InputError, match="needs a tokenizer"):
        chunk_text("hello there", "token")
    with pytest.raises(InputError, match="needs a tokenizer"):
        chunk_text("hello there", max_chunk_tokens=3)


# --- schedules -----------------------------------------------------------------------------


def test_words_per_second_schedule():
    chunks = ["one two three four five", "six seven", "eight"]
    assert words_per_second_schedule(chunks, 2.5) == pytest.approx([2.0, 2.8, 3.2])
    assert words_per_second_schedule(chunks, 1.0, start_s=10.0) == pytest.approx([15, 17, 18])
    assert words_per_second_schedule([]) == []
    for bad in (0, -2.5, float("nan"), float("inf"), "fast"):
        with pytest.raises(InputError, match="wps"):
            words_per_second_schedule(chunks, bad)
    with pytest.raises(InputError, match="start_s"):
        words_per_second_schedule(chunks, 2.5, start_s=-1)


def test_explicit_schedule():
    assert explicit_schedule(["a", "b", "c"], [0, 1.5, 1.5]) == [0.0, 1.5, 1.5]
    with pytest.raises(InputError, match="2 timestamps for 3 chunks"):
        explicit_schedule(["a", "b", "c"], [0, 1])
    with pytest.raises(InputError, match="must not decrease"):
        explicit_schedule(["a", "b"], [2, 1])
    with pytest.raises(InputError, match="negative"):
        explicit_schedule(["a"], [-0.5])
    with pytest.raises(InputError, match="finite"):
        explicit_schedule(["a"], [float("nan")])
    with pytest.raises(InputError, match="number"):
        explicit_schedule(["a"], ["soon"])


def test_make_stream(word_tok):
    s = make_stream("One two three four five. Six seven?", wps=2.5)
    assert [(c.index, c.text) for c in s.chunks] == [(0, "One two three four five."),
                                                     (1, "Six seven?")]
    assert [c.arrival_s for c in s.chunks] == pytest.approx([2.0, 2.8])
    s = make_stream(["a", "  ", " b "], timestamps=[0.5, 0.7, 1.0])
    assert [(c.text, c.arrival_s) for c in s.chunks] == [("a", 0.5), ("b", 1.0)]
    s = make_stream("Weng earns $12 an hour for babysitting. How much did she earn?",
                    timestamps=[1.0, 3.0], tokenizer=word_tok, max_chunk_tokens=4)
    # 9 + 6 word-level tokens -> 3 + 2 pieces, each arriving with its sentence
    assert [c.arrival_s for c in s.chunks] == [1.0, 1.0, 1.0, 3.0, 3.0]
    assert [c.index for c in s.chunks] == [0, 1, 2, 3, 4]
    assert s.chunks[0].text == "Weng earns $12"  # a slice of the original text: "$12" intact
    with pytest.raises(InputError, match="1 timestamps for 2 chunks"):
        make_stream("Go now. Stop here.", timestamps=[1.0])
    with pytest.raises(InputError, match="^the input is empty"):
        make_stream(["", " "])
    with pytest.raises(InputError, match="^the input is empty"):
        make_stream("  ")
    with pytest.raises(InputError, match="not text"):
        make_stream(["a", 3])


def test_scheduled_stream_with_virtual_clock():
    stream = make_stream(["one two", "three", "four five six"], wps=1.0)
    clock = VirtualClock()
    assert stream.poll(clock.now()) == []
    assert stream.next_arrival_s() == 2.0 and not stream.closed(clock.now())
    clock.wait_until(stream.next_arrival_s())
    assert [c.text for c in stream.poll(clock.now())] == ["one two"]
    clock.advance(1.5)  # 1.5 s of compute: now 3.5 s, past the second arrival (3.0 s)
    assert [c.text for c in stream.poll(clock.now())] == ["three"]
    assert stream.next_arrival_s() == 6.0 and not stream.closed(clock.now())
    clock.wait_until(stream.next_arrival_s())
    assert [c.arrival_s for c in stream.poll(clock.now())] == [6.0]
    assert stream.next_arrival_s() is None
    assert stream.closed(clock.now()) and stream.eoi_s() == 6.0
    with pytest.raises(InputError, match="must not decrease"):
        ScheduledStream([Chunk(0, "a", 2.0), Chunk(1, "b", 1.0)])


# --- live sources --------------------------------------------------------------------------


def _drain(source, timeout_s: float = 5.0) -> list[Chunk]:
    """Consume a live source like the engine does: poll, wait, until closed."""
    got: list[Chunk] = []
    deadline = time.perf_counter() + timeout_s
    while not source.closed(source.now_s()):
        assert time.perf_counter() < deadline, "live source never closed"
        got.extend(source.poll(source.now_s()))
        if not source.closed(source.now_s()):
            source.wait(0.5)
    return got


def test_live_source_pushes_from_a_thread():
    src = LiveSource()
    assert src.poll(src.now_s()) == [] and src.next_arrival_s() is None
    assert not src.closed(src.now_s()) and src.eoi_s() is None
    t0 = time.perf_counter()
    src.wait(0.05)  # nothing pushed: times out
    assert time.perf_counter() - t0 >= 0.04

    def producer():
        for text in ["first chunk", "   ", "second chunk", "third"]:
            time.sleep(0.03)
            src.push(text)
        src.close()

    threading.Thread(target=producer).start()
    got = _drain(src)
    assert [c.text for c in got] == ["first chunk", "second chunk", "third"]
    assert [c.index for c in got] == [0, 1, 2]
    times = [c.arrival_s for c in got]
    assert times == sorted(times) and times[0] > 0.02
    assert src.eoi_s() >= times[-1] and src.next_arrival_s() is None
    with pytest.raises(InputError, match="closed"):
        src.push("late")


def test_live_source_next_arrival_of_pending_chunk_and_failure():
    src = LiveSource()
    chunk = src.push("hello")
    assert src.next_arrival_s() == chunk.arrival_s
    src.fail("producer broke")
    src.close()
    assert not src.closed(src.now_s())  # the failure must still surface through poll
    with pytest.raises(InputError, match="producer broke"):
        src.poll(src.now_s())


def test_stdin_source_reads_lines_as_written():
    r, w = os.pipe()
    reader = os.fdopen(r, "rb")

    def writer():
        with os.fdopen(w, "wb", buffering=0) as f:
            for line in [b"The first sentence.\n", b"\n", "caf\u00e9 costs $3.50\r\n".encode(),
                         b"no newline at the end"]:
                time.sleep(0.05)
                f.write(line)

    threading.Thread(target=writer).start()
    src = stdin_source(reader)
    got = _drain(src)
    reader.close()
    assert [c.text for c in got] == ["The first sentence.", "caf\u00e9 costs $3.50",
                                     "no newline at the end"]
    times = [c.arrival_s for c in got]
    assert all(b - a > 0.02 for a, b in zip(times, times[1:])), times
    assert src.eoi_s() >= times[-1]


def test_stdin_source_invalid_utf8_raises_from_poll():
    r, w = os.pipe()
    with os.fdopen(w, "wb") as f:
        f.write(b"good line\nbad \xff\xfe line\nnever read\n")
    reader = os.fdopen(r, "rb")
    src = stdin_source(reader)
    got: list[Chunk] = []
    deadline = time.perf_counter() + 5.0
    with pytest.raises(InputError, match=r"stdin line 2 is not valid UTF-8 \(byte 0xff"):
        while time.perf_counter() < deadline:
            got.extend(src.poll(src.now_s()))
            src.wait(0.2)
    reader.close()
    assert [c.text for c in got] in ([], ["good line"])
    assert not src.closed(src.now_s())


def test_async_source_from_async_generator():
    async def words():
        for text in ["alpha beta.", "", "gamma?", "delta"]:
            await asyncio.sleep(0.02)
            yield text

    async def main():
        src = async_source(words())
        return src, await asyncio.to_thread(_drain, src)

    src, got = asyncio.run(main())
    assert [c.text for c in got] == ["alpha beta.", "gamma?", "delta"]
    assert [c.arrival_s for c in got] == sorted(c.arrival_s for c in got)
    assert src.closed(src.now_s()) and src.eoi_s() >= got[-1].arrival_s


def test_async_source_errors():
    async def broken():
        yield "fine"
        raise ValueError("microphone unplugged")

    async def main():
        src = async_source(broken())

        def consume():
            got = []
            with pytest.raises(InputError, match="ValueError: microphone unplugged"):
                for _ in range(100):
                    got.extend(src.poll(src.now_s()))
                    src.wait(0.2)
            return got

        return await asyncio.to_thread(consume)

    assert [c.text for c in asyncio.run(main())] in ([], ["fine"])
    with pytest.raises(InputError, match="running event loop"):
        async_source(broken())
    with pytest.raises(InputError, match="async iterable"):
        asyncio.run(_call_async_source_with(["not", "async"]))


async def _call_async_source_with(obj):
    return async_source(obj)


def test_async_source_on_a_loop_in_another_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        async def gen():
            for text in ["x y", "z"]:
                yield text

        src = async_source(gen(), loop=loop)
        assert [c.text for c in _drain(src)] == ["x y", "z"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


# --- files -------------------------------------------------------------------------------


def test_file_text(tmp_path):
    good = tmp_path / "in.txt"
    good.write_bytes("\ufeffHello.\nCaf\u00e9 is $3.50.\n".encode())
    assert file_text(good) == "Hello.\nCaf\u00e9 is $3.50.\n"
    with pytest.raises(InputError, match="not found"):
        file_text(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="directory"):
        file_text(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"line one\nline two\nab\xe9cd\n")
    with pytest.raises(InputError, match=r"line 3, column 3 \(byte 0xe9\)"):
        file_text(bad)


# --- StreamSpec: the one recipe of run, eval and RL rollouts ------------------------------


def test_stream_spec_defaults_are_defined_once():
    from adasr import defaults
    from adasr.models import DEFAULT_MODEL
    from adasr.stream import DEFAULT_WPS, StreamSpec

    spec = StreamSpec()
    assert (spec.chunker, spec.wps, spec.max_chunk_tokens) == ("sentence", 2.5, 128)
    assert (spec.wps, spec.max_chunk_tokens, DEFAULT_WPS) == (defaults.DEFAULT_WPS, defaults.DEFAULT_MAX_CHUNK_TOKENS,
                                                                 defaults.DEFAULT_WPS)
    assert DEFAULT_MODEL == defaults.DEFAULT_MODEL == "smollm2-135m-instruct"
    assert spec.as_config() == {"chunker": "sentence", "wps": 2.5, "max_chunk_tokens": 128, "tokens_per_chunk": 16}


@pytest.mark.parametrize("kwargs, match", [
    ({"chunker": "paragraph"}, "unknown chunker 'paragraph'"),
    ({"wps": 0}, "must be > 0"),
    ({"wps": float("nan")}, "finite"),
    ({"max_chunk_tokens": 0}, "max_chunk_tokens"),
    ({"tokens_per_chunk": -1}, "tokens_per_chunk"),
])
def test_stream_spec_rejects_bad_settings(kwargs, match):
    from adasr.stream import StreamSpec

    with pytest.raises(InputError, match=match):
        StreamSpec(**kwargs)


def test_stream_spec_streams_items_texts_and_timestamps(word_tok):
    from types import SimpleNamespace

    from adasr.stream import StreamSpec

    tok = word_tok
    spec = StreamSpec(wps=2.0, max_chunk_tokens=4)
    text = spec.stream("One two three. Four.", tokenizer=tok)
    assert [c.text for c in text.chunks] == ["One two three.", "Four."] and text.chunks[-1].arrival_s == 2.0
    item = SimpleNamespace(question="ignored. entirely.", chunks=["one two", "three"], timestamps=None)
    assert [(c.text, c.arrival_s) for c in spec.for_item(item, tokenizer=tok).chunks] == [("one two", 1.0),
                                                                                           ("three", 1.5)]
    timed = SimpleNamespace(question="q", chunks=["one two", "three"], timestamps=[0.25, 4.0])
    assert [c.arrival_s for c in spec.for_item(timed, tokenizer=tok).chunks] == [0.25, 4.0]
    long = SimpleNamespace(question="a b c d e f g h i j k l m n o p.", chunks=None)
    pieces = spec.for_item(long, tokenizer=tok).chunks
    assert len(pieces) > 1 and all(_ntok(tok, c.text) <= 4 for c in pieces)
    with pytest.raises(InputError, match="needs a tokenizer"):  # the cap is never silently skipped
        spec.stream("One. Two.")
    assert len(StreamSpec(max_chunk_tokens=None).stream("One. Two.").chunks) == 2


def test_typed_arrivals_at_characters_per_second():
    """``cps``: a chunk arrives when its last character is typed (one space between chunks);
    LiveMind's typing point is 240 characters/minute (4 characters/s)."""
    from adasr.stream import StreamSpec, characters_per_second_schedule

    assert characters_per_second_schedule(["abcd", "ef"], 4.0) == [1.0, 1.75]
    assert characters_per_second_schedule(["abcd"], 2.0, start_s=1.0) == [3.0]
    for bad in (0, -1, float("nan"), "x"):
        with pytest.raises(InputError, match="cps"):
            characters_per_second_schedule(["a"], bad)
    spec = StreamSpec(cps=4.0, max_chunk_tokens=None)
    src = spec.stream("Tom has 3 apples. He buys 5 more.")
    assert [c.arrival_s for c in src.chunks] == [17 / 4, 33 / 4]
    assert spec.as_config()["cps"] == 4.0 and "cps" not in StreamSpec().as_config()  # old dirs still resume
    with pytest.raises(InputError, match="cps"):
        StreamSpec(cps=0)


@pytest.mark.parametrize("text, chunks", [
    ("Mira jogs 5 miles per hour. If she jogs for 2 hours every morning, how many miles can she jog for five days?",
     ["Mira jogs 5 miles per hour.", "If she jogs for 2 hours every morning,", "how many miles can she jog for five days?"]),
    ("A bus holds 200 people, calculate the total if it is full twice.",
     ["A bus holds 200 people,", "calculate the total if it is full twice."]),
    # no question clause: a relative clause, a list, a statement's comma
    ("She went home, which was nice.", ["She went home, which was nice."]),
    ("Tom has 3 apples, 4 pears, and 2 plums.", ["Tom has 3 apples, 4 pears, and 2 plums."]),
    # the last comma only; the part before it needs 3 words
    ("If Ann has 4 pens, 2 cups, what does she have?", ["If Ann has 4 pens, 2 cups,", "what does she have?"]),
    ("How many, if any?", ["How many, if any?"]),
    ("So, how many?", ["So, how many?"]),
])
def test_split_clauses_cuts_a_final_question_clause(text, chunks):
    """The clause chunker: sentences, with a question clause after the last comma on its own chunk
    (a fact given in the question's sentence then arrives before the question is asked)."""
    assert split_clauses(text) == chunks == chunk_text(text, "clause")
    assert " ".join(split_clauses(text)) == " ".join(split_sentences(text))  # nothing lost or reordered
