"""Chunkers: pure functions from a text to a list of stripped, non-empty chunk texts
(:func:`split_sentences`, :func:`split_clauses`, :func:`split_words`, :func:`split_tokens`,
:func:`cap_chunk_tokens`; :func:`chunk_text` picks one by name).

Imports nothing of :mod:`adasr.stream`.
"""

from __future__ import annotations

import re
from typing import Sequence

from adasr.defaults import DEFAULT_CHUNKER, DEFAULT_TOKENS_PER_CHUNK
from adasr.errors import InputError

CHUNKERS = ("sentence", "clause", "word", "token")
"""Names accepted by :func:`chunk_text` (and ``--chunker`` on the command line)."""

# Abbreviations after which a period does not end a sentence (compared lower-case, without the
# final period). Titles are followed by a capitalised name, so capitalisation cannot decide.
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "ft", "rev", "gen",
        "capt", "col", "lt", "sgt", "gov", "sen", "rep", "hon", "pres", "messrs",
        "e.g", "i.e", "cf", "vs", "viz", "approx", "fig", "figs", "eq", "eqs", "sec", "ch",
        "vol", "pp", "al", "inc", "ltd", "co", "corp", "dept", "univ", "est", "ca",
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)
# Abbreviations that often *end* a sentence: they end one when the next word is capitalised.
_SOFT_ABBREVIATIONS = frozenset({"etc", "a.m", "p.m"})

# Terminal punctuation (".", "?", "!", "…", runs like "?!" or "..."), optional closing quotes or
# brackets, then whitespace or the end of the line. "3.50" and "$1,200.50" never match: no
# whitespace follows their period.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u2019\u201d)\]]*(?=\s|$)")
_NEXT_CHAR = re.compile(r"\s*[\"'\u2018\u201c(\[]*(\S?)")


def _ends_sentence(line: str, match: re.Match) -> bool:
    """Whether the terminal punctuation ``match`` in ``line`` really ends a sentence."""
    punct = match.group(0).rstrip("\"'\u2019\u201d)]")
    if punct != ".":  # "?", "!", "...", "?!": always a boundary
        return True
    # The word the punctuation ends (a bounded look-back keeps long texts linear).
    before = line[max(0, match.start() - 32) : match.start()]
    word = "" if not before or before[-1].isspace() else before.split()[-1]
    word = word.lstrip("\"'\u2018\u201c([").lower()
    nxt = _NEXT_CHAR.match(line, match.end()).group(1)
    if nxt and nxt.islower():  # "etc. and so on", "approx. five"
        return False
    if word in _ABBREVIATIONS:
        return False
    if word in _SOFT_ABBREVIATIONS:
        return True  # the next word is capitalised (checked above) or the line ends
    if len(word) == 1 and word.isalpha():  # an initial: "J. K. Rowling"
        return False
    if re.fullmatch(r"(?:[a-z]\.)+[a-z]", word):  # dotted acronyms: "U.S.A.", "Ph.D"
        return False
    return True


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (the default chunker).

    Boundaries are line breaks and terminal punctuation (``.``, ``?``, ``!``, ``…``, possibly
    repeated and followed by closing quotes or brackets) followed by whitespace. Periods inside
    numbers (``$3.50``, ``$1,200.50``), after common abbreviations (``Mr.``, ``Dr.``, ``e.g.``,
    ``i.e.``, ``vs.``), after initials (``J. K.``) or followed by a lower-case word are not
    boundaries. A final fragment without punctuation is kept.

    Args:
        text: any text.

    Returns:
        The sentences, stripped and non-empty, in order (empty list for blank text).
    """
    out: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _SENTENCE_END.finditer(line):
            if _ends_sentence(line, m):
                piece = line[start : m.end()].strip()
                if piece:
                    out.append(piece)
                start = m.end()
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    return out


# A question clause after a comma: "If she jogs 2 hours a day, | how many miles ...?" The clause
# starts with a question word and its sentence ends with "?", or it starts with an imperative that
# asks for the result ("..., calculate the total.").
_QUESTION_CLAUSE = re.compile(
    r",\s+(?=(?:(?:how|what|which|who|whom|whose|when|where|why)\b[^,]*\?\W*$)"
    r"|(?:calculate|find|determine|compute|work out)\b[^,]*$)", re.I)


def split_clauses(text: str) -> list[str]:
    """Split ``text`` into sentences (:func:`split_sentences`), then split off a sentence's final
    question clause after its comma: ``"If she jogs 2 hours a day, how many miles does she jog
    in 5 days?"`` gives ``"If she jogs 2 hours a day,"`` and ``"how many miles does she jog in 5
    days?"``.

    A question clause starts after the sentence's last comma with a question word (how, what,
    which, who, when, where, why) and ends the sentence with ``?``, or starts with an imperative
    that asks for the result (calculate, find, determine, compute, work out); the part before it
    must hold at least 3 words. Word problems often put a fact in their question's sentence: with
    sentence chunks that fact arrives with the question, in the last chunk, and no step that
    needs it can be thought before end of input; as its own chunk, it arrives before the question
    clause is typed or spoken (the aligner's bound on the distilled samples: benchmarks/RESULTS.md
    §44).

    Returns:
        The chunks, stripped and non-empty, in order (empty list for blank text).
    """
    out: list[str] = []
    for sentence in split_sentences(text):
        cut = None
        for m in _QUESTION_CLAUSE.finditer(sentence):
            cut = m
        if cut is not None and len(sentence[:cut.start()].split()) >= 3:
            out += [sentence[:cut.start() + 1].strip(), sentence[cut.end():].strip()]
        else:
            out.append(sentence)
    return out


def split_words(text: str, words_per_chunk: int = 1) -> list[str]:
    """Split ``text`` into chunks of ``words_per_chunk`` whitespace-separated words.

    The last chunk may hold fewer words. Runs of whitespace inside a chunk become one space.

    Raises:
        InputError: if ``words_per_chunk`` is smaller than 1.
    """
    if int(words_per_chunk) != words_per_chunk or words_per_chunk < 1:
        raise InputError(f"words_per_chunk must be a positive integer, got {words_per_chunk!r}")
    words = text.split()
    n = int(words_per_chunk)
    return [" ".join(words[i : i + n]) for i in range(0, len(words), n)]


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Token ids of ``text`` (no special tokens) and, when the tokenizer provides them, the
    character span of each token in ``text`` (``None`` otherwise)."""
    if hasattr(tokenizer, "backend_tokenizer") or callable(getattr(tokenizer, "__call__", None)):
        try:  # HF fast tokenizer: offsets map tokens back to the original characters
            enc = tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        except (NotImplementedError, TypeError, ValueError, KeyError):
            pass
    enc = tokenizer.encode(text, add_special_tokens=False)
    if hasattr(enc, "ids") and hasattr(enc, "offsets"):  # a raw `tokenizers.Tokenizer`
        return list(enc.ids), [tuple(o) for o in enc.offsets]
    return list(enc), None


def _token_pieces(tokenizer, text: str, ids, offsets, n: int) -> list[str]:
    """Cut ``text`` into pieces of ``n`` tokens each (given its ``ids`` and ``offsets``),
    stripped; empty pieces are dropped."""
    if offsets is None:  # slow tokenizer: decode each span of ids
        pieces = [tokenizer.decode(ids[i : i + n]) for i in range(0, len(ids), n)]
    else:
        # Cut at the first character of every n-th token; everything between two cuts
        # (whitespace included) belongs to one piece, so the pieces reproduce the text.
        cuts = [0]
        for i in range(n, len(ids), n):
            cuts.append(max(cuts[-1], offsets[i][0]))
        cuts.append(len(text))
        pieces = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    return [p.strip() for p in pieces if p.strip()]


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def split_tokens(text: str, tokenizer, tokens_per_chunk: int) -> list[str]:
    """Split ``text`` into chunks of ``tokens_per_chunk`` tokens of ``tokenizer``.

    The text is tokenized once (without special tokens). With a fast (Rust-backed) tokenizer
    the chunks are slices of the original text cut at token starts, so joining them with spaces
    reproduces the text up to whitespace; with a slow tokenizer each span of token ids is
    decoded. The last chunk may be shorter.

    Args:
        text: the text.
        tokenizer: a Hugging Face tokenizer (or a ``tokenizers.Tokenizer``).
        tokens_per_chunk: tokens per chunk, >= 1.

    Raises:
        InputError: if ``tokens_per_chunk`` is not a positive integer.
    """
    n = _check_count("tokens_per_chunk", tokens_per_chunk)
    if not text.strip():
        return []
    ids, offsets = _encode(tokenizer, text)
    return _token_pieces(tokenizer, text, ids, offsets, n)


def _n_tokens(tokenizer, text: str) -> int:
    return len(_encode(tokenizer, text)[0])


def _cap_one(text: str, tokenizer, max_tokens: int, depth: int = 0) -> list[str]:
    ids, offsets = _encode(tokenizer, text)
    if len(ids) <= max_tokens:
        return [text]
    out: list[str] = []
    for piece in _token_pieces(tokenizer, text, ids, offsets, max_tokens):
        # A stripped piece can tokenize into more tokens than its span had (e.g. a word that
        # loses its leading space); cut it again. Depth-bounded: single characters that are
        # several byte tokens cannot be cut further.
        if depth < 4 and len(piece) < len(text) and _n_tokens(tokenizer, piece) > max_tokens:
            out.extend(_cap_one(piece, tokenizer, max_tokens, depth + 1))
        else:
            out.append(piece)
    return out


def cap_chunk_tokens(chunks: Sequence[str], tokenizer, max_tokens: int) -> list[str]:
    """Split every chunk longer than ``max_tokens`` tokens into pieces of at most
    ``max_tokens`` tokens; shorter chunks are kept as they are.

    Each chunk is tokenized once (plus one check of each cut piece), so even a 100,000-character
    chunk is split in a fraction of a second. Pieces are cut at token starts (see
    :func:`split_tokens`) and stripped.

    Args:
        chunks: chunk texts.
        tokenizer: a Hugging Face tokenizer (or a ``tokenizers.Tokenizer``).
        max_tokens: the most tokens a chunk may hold, >= 1.

    Raises:
        InputError: if ``max_tokens`` is not a positive integer.
    """
    n = _check_count("max_tokens", max_tokens)
    out: list[str] = []
    for chunk in chunks:
        chunk = chunk.strip()
        if chunk:
            out.extend(_cap_one(chunk, tokenizer, n))
    return out


def chunk_text(
    text: str,
    chunker: str = DEFAULT_CHUNKER,
    *,
    tokenizer=None,
    tokens_per_chunk: int = DEFAULT_TOKENS_PER_CHUNK,
    max_chunk_tokens: int | None = None,
) -> list[str]:
    """Split ``text`` into chunks with the named chunker.

    Args:
        text: the whole input text.
        chunker: ``"sentence"`` (default, :func:`split_sentences`), ``"clause"`` (sentences, a
            final question clause on its own, :func:`split_clauses`), ``"word"`` (one word per
            chunk, :func:`split_words`) or ``"token"`` (``tokens_per_chunk`` tokens per chunk,
            :func:`split_tokens`; needs ``tokenizer``).
        tokenizer: the model's tokenizer; required by ``"token"`` and ``max_chunk_tokens``.
        tokens_per_chunk: tokens per chunk for the ``"token"`` chunker.
        max_chunk_tokens: if given, chunks longer than this many tokens are split further
            (:func:`cap_chunk_tokens`).

    Returns:
        The chunk texts (stripped, non-empty), at least one.

    Raises:
        InputError: for an unknown chunker, a missing tokenizer, or an empty (blank) text.
    """
    if chunker not in CHUNKERS:
        raise InputError(f"unknown chunker {chunker!r}: use one of {', '.join(CHUNKERS)}")
    if not isinstance(text, str) or not text.strip():
        raise InputError("the input is empty: give at least one non-blank chunk of text")
    if tokenizer is None and (chunker == "token" or max_chunk_tokens is not None):
        what = "the 'token' chunker" if chunker == "token" else "max_chunk_tokens"
        raise InputError(f"{what} needs a tokenizer")
    if chunker == "sentence":
        chunks = split_sentences(text)
    elif chunker == "clause":
        chunks = split_clauses(text)
    elif chunker == "word":
        chunks = split_words(text)
    else:
        chunks = split_tokens(text, tokenizer, tokens_per_chunk)
    if max_chunk_tokens is not None:
        chunks = cap_chunk_tokens(chunks, tokenizer, max_chunk_tokens)
    if not chunks:  # e.g. a tokenizer that maps the text to nothing
        raise InputError("the input is empty: give at least one non-blank chunk of text")
    return chunks
