// adasr serve page: sends each finished sentence of the text box as a chunk over
// WS /v1/sessions while the person types and draws the events (docs/SERVING.md): the notes
// (streaming thoughts) as they are written, then the answer, the measured post-input latency and
// the estimate of what read-then-think would have made them wait. No build step, no dependencies.
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

let ws = null, sent = 0, ended = false, playing = null, items = {};
let served = { model: null, mode: null };  // from GET /v1/models (or a session event)

function setStatus(text, cls) { const s = $("status"); s.textContent = text; s.className = "status " + (cls || ""); }

// the sample for a model and the mode a session runs in: a proactive threshold stream in proactive
// mode (or for a proactive model), a chain_sum problem for chain_sum models, a GSM8K problem otherwise
function sampleFor(model, mode) {
  const name = (model || "").toLowerCase();
  if (mode === "proactive" || name.includes("proactive")) return SAMPLES.proactive;
  if (/chain[-_ ]?sum/.test(name)) return SAMPLES.chain_sum;
  return SAMPLES.gsm8k;
}

function showServed(model, mode, note) {
  if (model) served = { model: model, mode: mode || null };
  $("model").textContent = model ? model + (mode ? " · " + mode + " mode" : "") : note;
  if (model && mode) $("mode").options[0].textContent = "server default (" + mode + ")";
}

// which model the server serves, and its default mode (the API key, when one is needed)
async function loadServed() {
  const key = $("key").value;
  try {
    const r = await fetch("/v1/models", { headers: key ? { Authorization: "Bearer " + key } : {} });
    if (r.status === 401) { if (!served.model) showServed(null, null, "(enter the API key)"); return; }
    const m = (await r.json()).data[0];
    showServed(m.id, m.mode);
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
  const mode = $("mode").value;
  sock.opened.then(() => { if (mode) sock.send(JSON.stringify({ type: "settings", mode: mode })); });
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
  else if (ev.type === "deep_start") $("deepstate").textContent = "(end of input: answering)";
  else if (ev.type === "token" && ev.stage === "deep") $("deep").textContent += ev.text;
  else if (ev.type === "response")  // proactive: an answer committed before the end of input (revision k > 0: replaced)
    $("answer").textContent = ev.prediction + (ev.revision ? " (revised)" : " (before end of input)");
  else if (ev.type === "answer") $("answer").textContent = ev.prediction === null ? "(no \\boxed{} answer)" : ev.prediction;
  else if (ev.type === "record") {
    const r = ev.record;
    $("latency").textContent = r.post_input_latency_s.toFixed(2) + " s";
    $("ttft").textContent = r.post_input_ttft_s === null ? "—" : r.post_input_ttft_s.toFixed(2) + " s";
    $("deepstate").textContent = "(" + r.deep_tokens + " tokens)";
    if (ev.read_then_think) $("estimate").textContent = estimateText(ev.read_then_think);
  }
  else if (ev.type === "error") $("error").textContent = ev.code + ": " + ev.message;
}
let current = null;

// the record event's read-then-think estimate (docs/SERVING.md), labelled as one
function estimateText(e) {
  const label = "read-then-think, estimated: ";
  if (e.estimated_post_input_latency_s === null) return label + "— (no decode rate measured in this session)";
  const est = "~" + e.estimated_post_input_latency_s.toFixed(1) + " s";
  if (!e.stream_tokens_before_eoi) return label + est + " (no tokens written while you typed: the same as measured)";
  return label + est + " (" + e.stream_tokens_before_eoi + " tokens written while you typed at " +
    e.decode_tokens_per_s.toFixed(1) + " tokens/s)";
}

// the text after the last sent sentence: every completed sentence in it is sent
function sendFinished(final) {
  const text = $("text").value;
  let last = sent, m;
  SENTENCE_END.lastIndex = sent;
  while ((m = SENTENCE_END.exec(text)) !== null) {
    const end = m.index + m[0].length;
    const piece = text.slice(last, end).trim();
    if (piece) send({ type: "chunk", text: piece });
    last = end;
  }
  if (final) { const rest = text.slice(last).trim(); if (rest) send({ type: "chunk", text: rest }); last = text.length; }
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
  sent = 0; ended = false; playing = null; items = {}; current = null;
  $("text").value = ""; $("chunks").innerHTML = ""; $("deep").textContent = ""; $("deepstate").textContent = "";
  $("answer").textContent = "—"; $("latency").textContent = "—"; $("ttft").textContent = "—";
  $("estimate").textContent = "read-then-think, estimated: —";
  $("error").textContent = ""; setStatus("idle");
}

function play() {
  reset();
  const words = sampleFor(served.model, $("mode").value || served.mode).split(/\s+/);
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
$("key").addEventListener("change", loadServed);
loadServed();
