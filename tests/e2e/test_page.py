"""The page of `adasr serve` in a real headless browser (Chromium driven by selenium): a person
types a problem sentence by sentence, the notes (streaming thoughts) appear under the chunks while
they type, then the answer, the post-input latency and the labelled read-then-think estimate. Run
with `make e2e` (installs chromium and its driver when missing).

Uses the bundled trained streamers `smollm2-135m-chain-sum`, (a word problem, typed)
`qwen2.5-coder-0.5b-gsm8k-stream` and (proactive mode: an answer, and a revision, before end of
input) `smollm2-135m-proactive`. With ADASR_E2E_SCREENSHOT=PATH the finished page of the first
test is saved there (docs/serve.png in the README comes from `make e2e`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time

import pytest
import torch
import uvicorn

from adasr.engine import EngineConfig, StreamingEngine
from adasr.models import load_model
from adasr.serve import create_app

pytestmark = pytest.mark.model
PROBLEM = "Start with 7. Add 5. Subtract 3. Add 8. Subtract 6. What is the result?"


WORD_PROBLEM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?")
ESTIMATE = re.compile(r"read-then-think, estimated: ~(\d+\.\d) s \((\d+) tokens written while you typed at "
                      r"(\d+\.\d) tokens/s\)")


def serve_model(name: str, dtype: torch.dtype | None = None, mode: str = "adaptive", **config):
    """A uvicorn server of the bundled model ``name`` (default mode ``mode``; ``config``: more
    EngineConfig fields) on a free loopback port, in a thread; yields its URL."""
    lm = load_model(name, dtype=dtype)
    engine = StreamingEngine(lm.model, lm.tokenizer, EngineConfig(policy=mode, protocol=lm.protocol, **config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(engine, model_name=name),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def server_url():
    yield from serve_model("smollm2-135m-chain-sum", max_deep_tokens=64)


@pytest.fixture(scope="module")
def gsm8k_server_url():
    """The shipped GSM8K streamer (bfloat16), its thoughts and deep stage capped to keep the test short."""
    yield from serve_model("qwen2.5-coder-0.5b-gsm8k-stream", torch.bfloat16, thought_budget=32, max_deep_tokens=96)


@pytest.fixture(scope="module")
def proactive_server_url():
    """The shipped proactive streamer, served in proactive mode (greedy; revisions 0 unless a session
    asks). The decode rate is pinned high, so every streaming thought may take its whole budget: a
    session whose sentences are typed each after the note of the one before (:func:`type_slowly`)
    writes what the same stream writes with far-apart arrivals on a virtual clock, whatever the
    machine's load."""
    yield from serve_model("smollm2-135m-proactive", mode="proactive", decode_rate=1e6, max_deep_tokens=16)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromedriver are needed: run `make e2e` (it installs them)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    yield driver
    driver.quit()


def test_typing_shows_thoughts_then_the_answer(server_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url + "/")
    box = browser.find_element(By.ID, "text")
    for sentence in PROBLEM.split(". "):  # a person typing: each finished sentence is sent as it is completed
        box.send_keys(sentence + (". " if not sentence.endswith("?") else ""))
        time.sleep(1.5)  # about 2.5 words/s
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chunks li")) >= 3)
    browser.find_element(By.ID, "end").click()
    wait.until(lambda d: d.find_element(By.ID, "latency").text.endswith(" s"))
    chunks = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chunks .chunk")]
    assert chunks[:2] == ["Start with 7.", "Add 5."] and chunks[-1] == "What is the result?"
    thoughts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chunks .thought")]
    assert any(t and not t.startswith("(skipped") for t in thoughts), thoughts  # the model thought while we typed
    answer = browser.find_element(By.ID, "answer").text
    assert answer not in ("", "—"), answer
    assert browser.find_element(By.ID, "status").text == "done"
    assert float(browser.find_element(By.ID, "latency").text.split()[0]) >= 0
    shot = os.environ.get("ADASR_E2E_SCREENSHOT")
    if shot:
        browser.save_screenshot(shot)


def type_until_noted(browser, text: str, wait_s: float) -> list[str]:
    """Type ``text`` sentence by sentence (each finished sentence is sent as it is completed), then
    wait, input still open, until a finished note (a streaming thought with words) is on the page;
    returns the finished notes seen before end of input."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = browser.find_element(By.ID, "text")
    for sentence in re.findall(r"[^.?!]+[.?!]\s*", text):
        box.send_keys(sentence)
        time.sleep(1.0)

    def notes(d) -> list[str]:
        return [e.text for e in d.find_elements(By.CSS_SELECTOR, "#chunks .thought.done")
                if e.text.strip() and not e.text.startswith("(skipped")]

    from selenium.common.exceptions import TimeoutException

    try:
        WebDriverWait(browser, wait_s).until(notes)
    except TimeoutException:
        seen = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chunks .thought")]
        raise AssertionError(f"no finished note in {wait_s} s; the notes so far: {seen}") from None
    return notes(browser)


def end_and_read_the_result(browser, wait_s: float) -> tuple[float, re.Match]:
    """Click "End of input", wait for the record; the measured post-input latency and the
    estimate line's match (estimate, tokens before end of input, decode rate)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert browser.find_element(By.ID, "status").text == "live"
    assert browser.find_element(By.ID, "latency").text == "—"  # nothing is measured before end of input
    browser.find_element(By.ID, "end").click()
    WebDriverWait(browser, wait_s).until(lambda d: d.find_element(By.ID, "latency").text.endswith(" s"))
    latency = float(browser.find_element(By.ID, "latency").text.split()[0])
    line = browser.find_element(By.ID, "estimate").text
    match = ESTIMATE.fullmatch(line)
    assert match, line
    assert "estimate, not a measurement" in browser.find_element(By.ID, "estimate-how").text.lower()
    return latency, match


def test_notes_appear_while_typing_then_the_answer_latency_and_estimate(server_url, browser):
    """A chain_sum problem typed sentence by sentence: notes before end of input; after it, the
    answer, the measured latency and the read-then-think estimate (latency + tokens / rate)."""
    from selenium.webdriver.common.by import By

    browser.get(server_url + "/")
    assert type_until_noted(browser, PROBLEM, 120)
    latency, m = end_and_read_the_result(browser, 120)
    estimate, tokens, rate = float(m[1]), int(m[2]), float(m[3])
    assert tokens > 0 and rate > 0
    assert estimate == pytest.approx(latency + tokens / rate, rel=0.05, abs=0.1)  # (all rounded on the page)
    assert browser.find_element(By.ID, "answer").text not in ("", "—")


def test_a_typed_word_problem_into_the_gsm8k_streamer(gsm8k_server_url, browser):
    """The shipped GSM8K streamer behind the page: a word problem typed sentence by sentence gets
    notes while it is typed, then the answer, the latency and the labelled estimate."""
    from selenium.webdriver.common.by import By

    browser.get(gsm8k_server_url + "/")
    notes = type_until_noted(browser, WORD_PROBLEM, 600)  # (a minute on an idle 2-core CPU; more when it is busy)
    latency, m = end_and_read_the_result(browser, 900)
    estimate, tokens, rate = float(m[1]), int(m[2]), float(m[3])
    assert tokens >= len(notes[0].split()) and rate > 0 and estimate > latency  # (a token is at most a word)
    assert browser.find_element(By.ID, "answer").text not in ("", "—")


def test_play_streams_the_sample_problem(server_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url + "/")
    wps = browser.find_element(By.ID, "wps")
    wps.clear()
    wps.send_keys("20")
    browser.find_element(By.ID, "play").click()
    WebDriverWait(browser, 180).until(lambda d: d.find_element(By.ID, "latency").text.endswith(" s"))
    chunks = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chunks .chunk")]
    assert chunks == PROBLEM.replace(". ", ".|").split("|")  # a chain_sum model plays the chain_sum sample
    assert browser.find_element(By.ID, "answer").text not in ("", "—")


def test_page_shows_the_served_model_and_mode(server_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url + "/")
    WebDriverWait(browser, 20).until(lambda d: "smollm2-135m-chain-sum" in d.find_element(By.ID, "model").text)
    assert "adaptive" in browser.find_element(By.ID, "model").text
    modes = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#mode option")]
    assert {"adaptive", "interleaved", "batch", "proactive"} <= set(modes), modes


def test_the_sample_follows_the_served_model_and_mode(server_url, browser):
    browser.get(server_url + "/")
    chain, proactive, proactive_model, gsm8k = browser.execute_script(
        "return [sampleFor('smollm2-135m-chain-sum', 'adaptive'), sampleFor('smollm2-135m-chain-sum', 'proactive'),"
        " sampleFor('smollm2-135m-proactive', 'adaptive'), sampleFor('qwen2.5-coder-0.5b-gsm8k-stream', 'batch')]")
    assert chain == PROBLEM
    assert proactive.startswith("The total starts at 0; tell me the running total as soon as it exceeds")
    assert proactive_model == proactive
    assert gsm8k.startswith("Natalia sold clips")


def test_new_session_during_a_live_session_is_not_an_error(server_url, browser):
    """Play in proactive mode (its sample: a threshold stream), then "New session" while it is
    live: the page goes back to idle, with no red "closed (1005)"."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(server_url + "/")
    Select(browser.find_element(By.ID, "mode")).select_by_visible_text("proactive")
    wps = browser.find_element(By.ID, "wps")
    wps.clear()
    wps.send_keys("20")
    browser.find_element(By.ID, "play").click()
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chunks .chunk")
               and d.find_element(By.CSS_SELECTOR, "#chunks .chunk").text)
    first = browser.find_element(By.CSS_SELECTOR, "#chunks .chunk").text
    assert first.startswith("The total starts at 0;"), first
    assert browser.find_element(By.ID, "status").text == "live"
    browser.find_element(By.ID, "reset").click()
    time.sleep(1.5)  # the close handshake ends after the click
    status = browser.find_element(By.ID, "status")
    assert status.text == "idle" and "failed" not in status.get_attribute("class"), status.text
    assert browser.find_element(By.ID, "error").text == ""
    assert browser.find_elements(By.CSS_SELECTOR, "#chunks li") == []


# -- proactive mode: an answer (and a revision) the moment it is committed ----------------------------
THRESHOLD = ("The total starts at 0; tell me the running total as soon as it exceeds 20. "
             "Add 7. Add 5. Subtract 2. Add 9. Add 6. Add 4. Add 3.")  # the page's proactive sample
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def type_slowly(browser, text: str, until) -> int:
    """Type ``text`` sentence by sentence, each after the note (streaming thought) of the one before
    is finished, as a person typing slowly: no thought is cut by an arrival, and no chunk waits.
    Stops once ``until(browser)`` is truthy; returns the sentences typed. End of input is never sent."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = browser.find_element(By.ID, "text")
    sentences = re.findall(r"[^.?!]+[.?!]\s*", text)
    for k, sentence in enumerate(sentences, 1):
        box.send_keys(sentence.strip() + " ")
        WebDriverWait(browser, 180).until(
            lambda d: until(d) or len(d.find_elements(By.CSS_SELECTOR, "#chunks .thought.done")) >= k)
        if until(browser):
            return k
    raise AssertionError(f"no answer on the page after all {len(sentences)} sentences: "
                         f"{[e.text for e in browser.find_elements(By.CSS_SELECTOR, '#chunks .thought')]}")


def rows(browser) -> list:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, "#chunks > li")


def committed_row(browser, n: int):
    """The chunk list's row ``n`` (1-based, as numbered on the page), checked to be marked as where an
    answer was committed; returns (its chunk text, the answer boxed in its note, its mark's text)."""
    from selenium.webdriver.common.by import By

    row = rows(browser)[n - 1]
    assert "answered" in row.get_attribute("class").split(), row.text
    note = row.find_element(By.CSS_SELECTOR, ".thought").text
    boxed = BOXED.findall(note)
    assert boxed, note
    return row.find_element(By.CSS_SELECTOR, ".chunk").text, boxed[-1], row.find_element(By.CSS_SELECTOR, ".committed")


def test_a_proactive_answer_shows_the_moment_it_is_committed_with_its_chunk(proactive_server_url, browser):
    """The threshold sample typed slowly into the shipped proactive streamer: the answer it commits
    (`19` after chunk 5 "Add 9.", with this adapter: premature) is on the page before end of input,
    with the chunk it came after (number, quote, the row marked); then, the session over (revisions
    0: the first response ends it), the same answer shown as final."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(proactive_server_url + "/")
    WebDriverWait(browser, 20).until(lambda d: "proactive mode" in d.find_element(By.ID, "model").text)
    answer = lambda d: d.find_element(By.ID, "answer").text not in ("", "—")  # noqa: E731
    typed = type_slowly(browser, THRESHOLD, answer)
    state = browser.find_element(By.ID, "answer-state").text  # read at once: before end of input
    assert browser.execute_script("return ended") is False  # the page never sent end of input
    marked = [i for i, r in enumerate(rows(browser), 1) if "answered" in r.get_attribute("class").split()]
    assert len(marked) == 1 and marked[0] < len(re.findall(r"[.?!]", THRESHOLD)), marked
    n = marked[0]
    chunk, boxed, mark = committed_row(browser, n)
    assert browser.find_element(By.ID, "answer").text == boxed
    assert mark.text == f"answer {boxed} committed here, before end of input"
    where = f"before end of input, after chunk {n} “{chunk}”"
    assert state.startswith("committed " + where) or state == "final: committed " + where, state
    assert typed >= n
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text == "done")
    assert browser.find_element(By.ID, "answer-state").text == "final: committed " + where
    assert browser.find_element(By.ID, "answer").text == boxed
    assert browser.find_element(By.ID, "history").text == ""  # no revision
    assert browser.find_element(By.ID, "deepstate").text == "(none: answered before end of input)"
    assert browser.find_element(By.ID, "error").text == ""


def test_a_revision_shows_the_answer_it_replaced(proactive_server_url, browser):
    """The same stream with "revisions 1" set on the page (sent in the session's settings): the
    shipped streamer commits `19` after chunk 5 and revises it to `25` (right) after chunk 6. The
    page strikes the first answer, in its row and in the history ("revised from 19 after chunk 5
    … to 25 after chunk 6 …"), and keeps that history when the final answer comes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(proactive_server_url + "/")
    WebDriverWait(browser, 20).until(lambda d: "proactive mode" in d.find_element(By.ID, "model").text)
    field = browser.find_element(By.ID, "revisions")
    assert field.is_enabled() and field.get_attribute("placeholder") == "default (0)"
    field.send_keys("1")
    revised = lambda d: d.find_element(By.ID, "history").text  # noqa: E731
    type_slowly(browser, THRESHOLD, revised)
    assert browser.execute_script("return ended") is False
    marked = [i for i, r in enumerate(rows(browser), 1) if "answered" in r.get_attribute("class").split()]
    assert len(marked) == 2, marked
    (i, j) = marked
    first_chunk, first, old_mark = committed_row(browser, i)
    second_chunk, second, new_mark = committed_row(browser, j)
    assert first != second and i < j
    assert old_mark.text == f"answer {first} committed here; revised after chunk {j}"
    assert "superseded" in old_mark.get_attribute("class").split()
    assert old_mark.find_element(By.TAG_NAME, "del").text == first  # struck through
    assert new_mark.text == f"answer revised to {second} committed here, before end of input"
    history = browser.find_element(By.ID, "history")
    expected = (f"revised from {first} after chunk {i} “{first_chunk}” to {second} after chunk {j} “{second_chunk}”")
    assert history.text == expected
    assert history.find_element(By.TAG_NAME, "del").text == first
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text == "done")  # 1 revision: the end
    assert browser.find_element(By.ID, "answer").text == second
    assert browser.find_element(By.ID, "answer-state").text == (
        f"final: committed before end of input, after chunk {j} “{second_chunk}”")
    assert browser.find_element(By.ID, "history").text == expected  # the final answer keeps the history
    assert browser.find_element(By.ID, "error").text == ""


def test_the_revisions_setting_is_for_proactive_sessions_and_checked(proactive_server_url, browser):
    """The revisions field is off for the other modes; a value out of 0 .. 8 is sent as typed and
    the server's error is shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(proactive_server_url + "/")
    WebDriverWait(browser, 20).until(lambda d: "proactive mode" in d.find_element(By.ID, "model").text)
    field, mode = browser.find_element(By.ID, "revisions"), Select(browser.find_element(By.ID, "mode"))
    mode.select_by_visible_text("adaptive")
    assert not field.is_enabled()
    assert browser.execute_script("return sessionSettings()") == {"mode": "adaptive"}
    mode.select_by_visible_text("proactive")
    field.send_keys("9")
    assert browser.execute_script("return sessionSettings()") == {"mode": "proactive", "revisions": 9}
    browser.find_element(By.ID, "text").send_keys("The total starts at 0. ")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == (
        "invalid_frame: invalid settings frame: revisions: Input should be less than or equal to 8")
    assert browser.find_element(By.ID, "status").text == "closed (4400)"


def test_clause_chunks_send_the_facts_before_the_question_clause(server_url, browser):
    """With chunks "clauses", the part of a sentence before its question clause is sent the moment
    the clause's first word is typed (input still open), and the chunks of the whole typed text are
    those of the library's clause chunker (adasr.stream.split_clauses)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from adasr.stream import split_clauses

    text = "Tom has 5 apples. If he buys 3 bags with 4 apples each, how many apples does he have?"
    head, rest = text.split(" how ", 1)
    browser.get(server_url + "/")
    Select(browser.find_element(By.ID, "chunker")).select_by_value("clause")
    box = browser.find_element(By.ID, "text")
    box.send_keys(head + " how ")
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chunks .chunk")) >= 2)
    chunks = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chunks .chunk")]
    assert chunks == ["Tom has 5 apples.", "If he buys 3 bags with 4 apples each,"]
    assert browser.find_element(By.ID, "status").text == "live"
    box.send_keys(rest)
    browser.find_element(By.ID, "end").click()
    wait.until(lambda d: d.find_element(By.ID, "latency").text.endswith(" s"))
    chunks = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chunks .chunk")]
    assert chunks == split_clauses(text) and len(chunks) == 3
