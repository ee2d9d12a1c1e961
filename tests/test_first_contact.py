"""A user's first minutes with adasr: a mistyped model name, `adasr train` without arguments,
`adasr models` in an 80-column terminal, `adasr run --server` with no server, and the page of
`adasr serve` (its static files; the browser checks are in tests/e2e/test_page.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import adasr
from adasr import models as models_mod
from adasr.errors import ConfigError, ModelLoadError
from adasr.models import BUNDLED, load_model
from adasr.models import adapters as adapters_mod, hub, loader

ADASR = [sys.executable, "-m", "adasr.cli"]
STATIC = Path(adasr.__file__).parent / "serve" / "static"


def adasr(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(ADASR + list(args), capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err
    return err


def bundled_names() -> list[str]:
    return list(BUNDLED) + list(adapters_mod._bundled_adapters())


@pytest.fixture
def no_hub(monkeypatch):
    """The hub loader replaced by one that records the names it was asked for and fails."""
    asked: list[str] = []

    def fake_hub(name, **_kw):
        asked.append(name)
        raise ModelLoadError(f"(test) the hub was asked for {name}")

    monkeypatch.setattr(loader, "_load_hub", fake_hub)
    return asked


# -- model names ------------------------------------------------------------------------------
def test_a_typo_of_a_bundled_name_fails_at_once_with_the_closest_names(no_hub):
    with pytest.raises(ConfigError) as info:
        load_model("smollm2-135m-chainsum")
    msg = str(info.value)
    assert "smollm2-135m-chain-sum" in msg and "\n" not in msg, msg
    assert no_hub == []  # never sent to the hub (53 s of retries when online)
    with pytest.raises(ConfigError, match="smollm2-135m-instruct"):
        load_model("SmolLM2-135M-Instruct")  # case does not hide the match


def test_hub_ids_still_go_to_the_hub(no_hub):
    for name in ("someorg/smollm2-135m-chainsum", "gpt2"):  # an owner, or nothing bundled is close
        with pytest.raises(ModelLoadError, match=r"\(test\)"):
            load_model(name)
    assert no_hub == ["someorg/smollm2-135m-chainsum", "gpt2"]


def test_model_not_found_errors_list_the_bundled_names():
    offline = OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    for err, is_offline in [(offline, False), (offline, True), (RuntimeError("something else"), False)]:
        msg = str(hub._hub_error("someorg/nothing-here", None, err, is_offline))
        assert all(name in msg for name in bundled_names()), msg
        assert "\n" not in msg


def test_cli_run_with_a_mistyped_model_names_the_close_ones():
    t0 = time.monotonic()
    proc = adasr("run", "Add 5. What is it?", "--model", "smollm2-135m-chainsum", "--clock", "virtual",
                 env={"HF_HUB_OFFLINE": "0"})  # online: the hub must not even be asked
    err = one_line_error(proc)
    assert "smollm2-135m-chain-sum" in err and time.monotonic() - t0 < 40, err


# -- adasr train --------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [[], ["sft"], ["hrpo"]])
def test_cli_train_without_a_config_says_what_to_pass(args):
    err = one_line_error(adasr("train", *args))
    assert "adasr train CONFIG.yaml" in err and "adasr train sft|grpo|hrpo --config FILE" in err, err
    assert "{stage}" not in err and "gsm8k" not in err, err


# -- adasr models -------------------------------------------------------------------------------
def test_cli_models_fits_80_columns():
    proc = adasr("models", env={"COLUMNS": "80", "TERM": "dumb"})
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert "…" not in out and "..." not in out, out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    words = set(re.findall(r"[\w.\-]+", out))
    rows = models_mod.list_models()
    assert {r["name"] for r in rows} <= words, out  # every name whole
    assert {r["base"] for r in rows if r["base"]} <= words, out  # and every adapter's base


def test_models_table_renders_without_ellipsis_at_80_columns():
    from io import StringIO

    from rich.console import Console

    from adasr.cli.models import models_renderables

    rows = models_mod.list_models()
    rows.append({**rows[-1], "name": "an-adapter", "trained_on": "x" * 120 + " " + "word " * 30})
    buf = StringIO()
    console = Console(file=buf, width=80, color_system=None)
    for part in models_renderables(rows):
        console.print(part)
    out = buf.getvalue()
    assert "…" not in out and all(len(line) <= 80 for line in out.splitlines()), out
    assert "x" * 40 in out.replace("\n", "").replace("│", "").replace(" ", "")  # folded, not cut


# -- adasr run --server ---------------------------------------------------------------------------
def test_cli_run_on_an_unreachable_server_fails_before_the_live_view():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    for extra in ([], ["--json"]):
        proc = adasr("run", "Add 5. What is it?", "--server", f"http://127.0.0.1:{port}", *extra)
        err = one_line_error(proc)
        assert f"127.0.0.1:{port}" in err and "adasr serve" in err, err
        assert proc.stdout == b"", proc.stdout.decode()  # no empty live view first


# -- the page's static files --------------------------------------------------------------------
def test_page_mode_select_lists_every_mode():
    from adasr.policy import MODES

    html = (STATIC / "index.html").read_text()
    select = re.search(r'<select id="mode">(.*?)</select>', html, re.S).group(1)
    options = re.findall(r"<option(?: value=\"[^\"]*\")?>([^<]*)</option>", select)
    assert set(MODES) <= set(options), options
    assert "proactive" in options


def test_page_shows_the_served_model_and_picks_its_sample():
    html = (STATIC / "index.html").read_text()
    js = (STATIC / "app.js").read_text()
    assert 'id="model"' in html  # where the served model and mode are shown
    assert 'fetch("/v1/models"' in js
    assert "Start with 7. Add 5. Subtract 3. Add 8. Subtract 6. What is the result?" in js  # chain_sum models
    assert "tell me the running total as soon as it exceeds" in js  # proactive mode
    assert "Natalia sold clips" in js  # everything else


def test_client_check_tells_a_server_from_nothing_and_from_a_wrong_one():
    import http.server
    import threading

    from adasr.client import Client, ServerError

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            code = {"/ok/health": 200, "/locked/health": 401}.get(self.path, 404)
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}' if code == 200 else b"no")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert Client(url + "/ok").check() == {"status": "ok"}
        assert Client(url + "/locked/v1/sessions").check() == {}  # answered: the session reports the key
        with pytest.raises(ServerError, match="no adasr server at"):
            Client(url).check()
    finally:
        server.shutdown()
