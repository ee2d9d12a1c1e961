// adasr serve page: sends each finished sentence (or clause: the chunks selector) of the text box as a chunk over
// WS /v1/sessions while the person types and draws the events (docs/SERVING.md): the notes
// (streaming thoughts) as they are written, then the answer, the measured post-input latency and
// the estimate of what read-then-think would have made them wait. In proactive mode an answer the
// model commits before end of input (and each revision of it) is shown the moment it comes, with
// the chunk it came after. No build step, no dependencies.
"use strict";
// "Play sample" streams the problem the served model is made for (sampleFor)
const SAMPLES = {
  gsm8k: "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips " +
    "in May. How many clips did Natalia sell altogether in April and May?",
  chain_sum: "Start with 7. Add 5. Subtract 3. Add 8. Subtract 6. What is the result?",
  proactive: "The total starts at 0; tell me the running total as soon as it exceeds 20. " +
    "Add 7. Add 5. Subtract 2. Add 9. Add 6. Add 4. Add 3.",
};
const $ = (id) => document.getElementById(id);
const SENTENCE_END = /[.!?]+["')\]]*\s/g;
// clause chunks (adasr.stream.split_clauses, typed live): a sentence's part before ", how ..." (or
// another question word, or an imperative that asks for the result) is sent as soon as that word is
// typed, so its facts arrive before the question clause does
const QUESTION_CLAUSE = /,\s+(?:how|what|which|who|whom|whose|when|where|why|calculate|find|determine|compute|work out)\s/gi;

let ws = null, sent = 0, ended = false, playing = null, items = {};
let served = { model: null, mode: null, revisions: null };  // from GET /v1/models (or a session event)
// proactive: the answers committed so far ({prediction, chunk, beforeEoi}; a later one revises the one before)
let responses = [], eoiSeen = false;

function setStatus(text, cls) { const s = $("status"); s.textContent = text; s.className = "status " + (cls || ""); }

// the sample for a model and the mode a session runs in: a proactive threshold stream in proactive
// mode (or for a proactive model), a chain_sum problem for chain_sum models, a GSM8K problem otherwise
function sampleFor(model, mode) {
  const name = (model || "").toLowerCase();
  if (mode === "proactive" || name.includes("proactive")) return SAMPLES.proactive;
  if (/chain[-_ ]?sum/.test(name)) return SAMPLES.chain_sum;
  return SAMPLES.gsm8k;
}

function showServed(model, mode, note, revisions) {
  if (model) served = { model: model, mode: mode || null, revisions: revisions === undefined ? served.revisions : revisions };
  $("model").textContent = model ? model + (mode ? " · " + mode + " mode" : "") : note;
  if (model && mode) $("mode").options[0].textContent = "server default (" + mode + ")";
  if (served.revisions !== null) $("revisions").placeholder = "default (" + served.revisions + ")";
  syncRevisions();
}

// the mode a new session runs in: the one chosen, else the server's default
function sessionMode() { return $("mode").value || served.mode; }

// the revisions field applies to proactive sessions only (the server refuses it for the other modes)
function syncRevisions() { $("revisions").disabled = sessionMode() !== "proactive"; }

// the first frame's settings: the mode chosen, and the revisions field of a proactive session when
// filled in (sent as typed: the server answers a value out of 0 .. 8 with an error event); null: none
function sessionSettings() {
  const s = {}, rev = $("revisions").value.trim();
  if ($("mode").value) s.mode = $("mode").value;
  if (!$("revisions").disabled && rev !== "") s.revisions = Number(rev);
  return Object.keys(s).length ? s : null;
}

// which model the server serves, and its default mode (the API key, when one is needed)
async function loadServed() {
  const key = $("key").value;
  try {
    const r = await fetch("/v1/models", { headers: key ? { Authorization: "Bearer " + key } : {} });
    if (r.status === 401) { if (!served.model) showServed(null, null, "(enter the API key)"); return; }
    const m = (await r.json()).data[0];
    showServed(m.id, m.mode, null, m.revisions === undefined ? null : m.revisions);
  } catch (e) {
    if (!served.model) showServed(null, null, "(unknown: the server did not answer)");
  }
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const key = $("key").value;
  const url = proto + "//" + location.host + "/v1/sessions" + (key ? "?api_key=" + encodeURIComponent(key) : "");
  const sock = new WebSocket(url);
  ws = sock;
  sock.opened = new Promise((resolve) => sock.addEventListener("open", resolve));
  // a socket "New session" replaced is ignored: its late events and its close are no one's concern
  sock.addEventListener("message", (m) => { if (sock === ws) onEvent(JSON.parse(m.data)); });
  sock.addEventListener("close", (e) => {
    if (sock !== ws) return;
    if (e.code !== 1000 && !$("error").textContent) $("error").textContent = "closed: " + e.code + " " + e.reason;
    if (e.code === 1000) setStatus("done", "done"); else setStatus("closed (" + e.code + ")", "failed");
  });
  const settings = sessionSettings();
  sock.opened.then(() => { if (settings) sock.send(JSON.stringify(Object.assign({ type: "settings" }, settings))); });
  setStatus("live", "live");
}

async function send(frame) {
  if (!ws) connect();
  const sock = ws;
  await sock.opened;
  if (sock === ws && sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify(frame));
}

function item(chunk) {
  if (!items[chunk]) {
    const li = document.createElement("li");
    li.innerHTML = '<div class="chunk waiting"></div><div class="thought"></div>';
    $("chunks").appendChild(li);
    items[chunk] = li;
  }
  return items[chunk];
}

function onEvent(ev) {
  if (ev.type === "session") { if (ev.model) showServed(ev.model, ev.mode); }
  else if (ev.type === "arrive") item(ev.chunk).querySelector(".chunk").textContent = ev.text;
  else if (ev.type === "ingest") { item(ev.chunk).querySelector(".chunk").classList.remove("waiting"); current = ev.chunk; }
  else if (ev.type === "token" && ev.stage === "stream" && current !== null)
    item(current).querySelector(".thought").textContent += ev.text;
  else if (ev.type === "thought") {
    const th = item(ev.chunk).querySelector(".thought");
    if (ev.skipped) { th.textContent = ev.forced ? "(skipped: no time before the next chunk)" : "(skipped)";
      th.classList.add("skipped"); }
    else th.textContent = ev.text;
    th.classList.add("done");  // the note is finished (tokens stream into it until then)
  }
  else if (ev.type === "eoi") eoiSeen = true;
  else if (ev.type === "deep_start") $("deepstate").textContent = "(end of input: answering)";
  else if (ev.type === "token" && ev.stage === "deep") $("deep").textContent += ev.text;
  else if (ev.type === "response") onResponse(ev);
  else if (ev.type === "answer") onAnswer(ev);
  else if (ev.type === "record") {
    const r = ev.record;
    $("latency").textContent = r.post_input_latency_s.toFixed(2) + " s";
    $("ttft").textContent = r.post_input_ttft_s === null ? "—" : r.post_input_ttft_s.toFixed(2) + " s";
    $("deepstate").textContent = r.finish_reason === "answered_early" ? "(none: answered before end of input)"
      : "(" + r.deep_tokens + " tokens)";
    if (ev.read_then_think) $("estimate").textContent = estimateText(ev.read_then_think);
  }
  else if (ev.type === "error") $("error").textContent = ev.code + ": " + ev.message;
}
let current = null;

function el(tag, text, cls) { const e = document.createElement(tag); e.textContent = text; if (cls) e.className = cls; return e; }

// "after chunk N “its text”" (N as numbered in the chunk list; a long chunk is cut to a short quote)
function afterChunk(i) {
  const t = item(i).querySelector(".chunk").textContent.trim();
  return "after chunk " + (i + 1) + " “" + (t.length > 60 ? t.slice(0, 57).trimEnd() + "…" : t) + "”";
}

function describe(r) { return (r.beforeEoi ? "before end of input, " : "") + afterChunk(r.chunk); }

// proactive: a streaming thought committed an answer (revision 0) or revised it (revision k > 0). Shown at
// once: the answer and the chunk it came after (that chunk's row is marked); a revision strikes the answer it
// replaces, in the row it came after and in the history under the answer ("revised from X after chunk i to Y
// after chunk j")
function onResponse(ev) {
  const prev = responses[responses.length - 1];
  const r = { prediction: ev.prediction, chunk: ev.chunk, beforeEoi: !eoiSeen };
  responses.push(r);
  if (prev) {
    const old = item(prev.chunk).querySelector(".committed");
    old.classList.add("superseded");
    old.textContent = "answer ";
    old.append(el("del", prev.prediction), " committed here; revised after chunk " + (r.chunk + 1));
    const h = el("li", "revised from ");
    h.append(el("del", prev.prediction), " " + afterChunk(prev.chunk) + " to ", el("strong", r.prediction),
      " " + afterChunk(r.chunk));
    $("history").appendChild(h);
  }
  const li = item(r.chunk);
  li.classList.add("answered");
  li.appendChild(el("div", (prev ? "answer revised to " : "answer ") + r.prediction + " committed here" +
    (r.beforeEoi ? ", before end of input" : ""), "committed"));
  $("answer").textContent = r.prediction;
  setAnswerState("committed " + describe(r) + (ev.revision ? " (revision " + ev.revision + ")" : ""), "committed");
}

function setAnswerState(text, cls) { const s = $("answer-state"); s.textContent = text; s.className = "answer-state " + cls; }

// the episode's answer: the deep stage's after end of input, or (answered early: the last committed
// answer, the engine's rule) the committed one, then shown as final with its history kept
function onAnswer(ev) {
  const last = responses[responses.length - 1];
  $("answer").textContent = ev.prediction === null ? "(no \\boxed{} answer)" : ev.prediction;
  if (ev.finish_reason === "answered_early" && last) setAnswerState("final: committed " + describe(last), "final");
}

// the record event's read-then-think estimate (docs/SERVING.md), labelled as one
function estimateText(e) {
  const label = "read-then-think, estimated: ";
  if (e.estimated_post_input_latency_s === null) return label + "— (no decode rate measured in this session)";
  const est = "~" + e.estimated_post_input_latency_s.toFixed(1) + " s";
  if (!e.stream_tokens_before_eoi) return label + est + " (no tokens written while you typed: the same as measured)";
  return label + est + " (" + e.stream_tokens_before_eoi + " tokens written while you typed at " +
    e.decode_tokens_per_s.toFixed(1) + " tokens/s)";
}

// the end (an index of text) of the first clause to send in text[from, to), or -1: just after the
// comma before a question clause whose first word (and the space after it) lies in text[from, to),
// with at least 3 words before the comma
function clauseEnd(text, from, to) {
  QUESTION_CLAUSE.lastIndex = from;
  let m;
  while ((m = QUESTION_CLAUSE.exec(text)) !== null && m.index + m[0].length <= to) {
    if (text.slice(from, m.index).trim().split(/\s+/).length >= 3) return m.index + 1;
  }
  return -1;
}

// the text after the last sent chunk: every completed sentence in it is sent (in clause mode, cut
// before its question clause), and in clause mode the leading clause of the sentence being typed
function sendFinished(final) {
  const text = $("text").value, clauses = $("chunker").value === "clause";
  let last = sent, m;
  const sendUpTo = (end) => {
    if (clauses) { const cut = clauseEnd(text, last, end); if (cut > 0) sendUpTo(cut); }
    const piece = text.slice(last, end).trim();
    if (piece) send({ type: "chunk", text: piece });
    last = end;
  };
  for (SENTENCE_END.lastIndex = sent; (m = SENTENCE_END.exec(text)) !== null;) {
    const end = m.index + m[0].length;
    sendUpTo(end);
    SENTENCE_END.lastIndex = end;
  }
  if (final) sendUpTo(text.length);
  else if (clauses) { const cut = clauseEnd(text, last, text.length); if (cut > 0) sendUpTo(cut); }
  sent = last;
}

function endInput() {
  if (ended) return;
  sendFinished(true);
  ended = true;
  send({ type: "end" });
}

function reset() {
  if (playing) clearInterval(playing);
  const old = ws;
  ws = null;  // first: the old socket's close is then not shown as a failure
  if (old) old.close(1000, "new session");
  sent = 0; ended = false; playing = null; items = {}; current = null; responses = []; eoiSeen = false;
  $("text").value = ""; $("chunks").innerHTML = ""; $("deep").textContent = ""; $("deepstate").textContent = "";
  $("answer").textContent = "—"; $("latency").textContent = "—"; $("ttft").textContent = "—";
  $("answer-state").textContent = ""; $("history").innerHTML = "";
  $("estimate").textContent = "read-then-think, estimated: —";
  $("error").textContent = ""; setStatus("idle");
}

function play() {
  reset();
  const words = sampleFor(served.model, sessionMode()).split(/\s+/);
  const wps = Math.max(0.5, parseFloat($("wps").value) || 2.5);
  let i = 0;
  playing = setInterval(() => {
    $("text").value += (i ? " " : "") + words[i++];
    if (i < words.length) { sendFinished(false); return; }
    clearInterval(playing); playing = null; endInput();
  }, 1000 / wps);
}

$("text").addEventListener("input", () => { if (!ended) sendFinished(false); });
$("end").addEventListener("click", endInput);
$("play").addEventListener("click", play);
$("reset").addEventListener("click", reset);
$("mode").addEventListener("change", syncRevisions);
$("key").addEventListener("change", loadServed);
loadServed();
