"""The client (adasr.client) against a real server: sync and async sessions, its errors, and
`adasr run --server` against `adasr serve`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from adasr.client import AsyncClient, Client, ServerError, sessions_url
from adasr.errors import InputError

from serve_helpers import TEXT, free_port, wait_for


def test_sync_client_streams_any_iterator(live_server):
    def slow():
        for t in TEXT:
            time.sleep(0.05)
            yield t

    events = list(Client(live_server).session(slow()))
    assert events[0]["type"] == "session" and events[-1]["type"] == "record"
    assert [e["text"] for e in events if e["type"] == "arrive"] == TEXT
    record = Client(live_server).solve(iter(TEXT[:1]), settings={"mode": "batch"})
    assert record["record"]["mode"] == "batch" and record["record"]["n_chunks"] == 1


def test_async_client_with_an_async_iterator(live_server):
    async def chunks():
        for t in TEXT:
            await asyncio.sleep(0.02)
            yield t

    async def main():
        client = AsyncClient(live_server)
        return await asyncio.gather(*(client.solve(chunks()) for _ in range(3)))

    finals = asyncio.run(main())
    assert len({f["id"] for f in finals}) == 3 and all(f["record"]["n_chunks"] == 3 for f in finals)


def test_client_errors(live_server):
    with pytest.raises(ServerError, match="empty_input"):
        Client(live_server).solve(iter([]))
    with pytest.raises(ServerError, match="invalid_settings"):
        Client(live_server).solve(iter(TEXT), settings={"max_deep_tokens": 10_000})
    with pytest.raises(InputError, match="must be text"):
        Client(live_server).solve(iter(["Add 5.", 7]))
    with pytest.raises(ServerError, match="cannot connect"):
        Client(f"http://127.0.0.1:{free_port()}").solve(iter(TEXT))
    with pytest.raises(InputError):
        sessions_url("ftp://x")
    assert sessions_url("https://h:1/") == "wss://h:1/v1/sessions"


def test_adasr_serve_and_run_server_end_to_end(tiny_dir):
    port = free_port()
    cli = [sys.executable, "-m", "adasr.cli"]
    env = {**os.environ, "ADASR_API_KEY": "k1"}
    proc = subprocess.Popen(cli + ["serve", "--model", tiny_dir, "--port", str(port), "--decode-rate", "50",
                                   "--max-deep-tokens", "12", "--mode", "interleaved", "--budget", "4", "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        wait_for(lambda: _up(httpx, url), timeout_s=60)
        assert httpx.get(url + "/health").json()["torch_threads"] == 1  # --threads reached torch
        run = subprocess.run(cli + ["run", "Natalia sold 48 clips. Then half as many. How many?", "--server", url,
                                    "--wps", "20", "--json"], env=env, capture_output=True, timeout=60)
        assert run.returncode == 0, run.stderr.decode()
        out = json.loads(run.stdout)
        assert out["record"]["n_chunks"] == 3 and out["record"]["mode"] == "interleaved"
        assert out["record"]["deep_tokens"] <= 12 and [e["type"] for e in out["events"]][-1] == "answer"
        live = subprocess.run(cli + ["run", "-", "--server", url, "--mode", "batch"], input=b"Add 5.\nWhat is it?\n",
                              env=env, capture_output=True, timeout=60)
        assert live.returncode == 0 and b"post_input_latency_s" in live.stdout, live.stderr.decode()
        nokey = subprocess.run(cli + ["run", "Add 5.", "--server", url], capture_output=True, timeout=60,
                               env={k: v for k, v in os.environ.items() if k != "ADASR_API_KEY"})
        assert nokey.returncode != 0 and b"Traceback" not in nokey.stderr
        assert b"error: the server ended the session: unauthorized" in nokey.stderr
        taken = subprocess.run(cli + ["serve", "--model", tiny_dir, "--port", str(port)], capture_output=True,
                               timeout=60)
        assert taken.returncode != 0 and taken.stderr.decode().startswith("error: cannot listen on")
        zero = subprocess.run(cli + ["serve", "--model", tiny_dir, "--threads", "0"], capture_output=True, timeout=60)
        assert zero.returncode != 0 and "--threads >= 1" in zero.stderr.decode() and b"Traceback" not in zero.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def test_adasr_serve_mode_proactive_with_revisions(tiny_dir):
    """`adasr serve --mode proactive --revisions 1`: /v1/models reports both defaults, a session's
    settings may change them (a value out of 0 .. 8 is refused with an error event); revisions
    with another mode, or below 0, fail before the model loads."""
    port = free_port()
    cli = [sys.executable, "-m", "adasr.cli"]
    proc = subprocess.Popen(cli + ["serve", "--model", tiny_dir, "--port", str(port), "--decode-rate", "50",
                                   "--max-deep-tokens", "4", "--mode", "proactive", "--revisions", "1", "--budget", "4",
                                   "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        wait_for(lambda: _up(httpx, url), timeout_s=60)
        served = httpx.get(url + "/v1/models").json()["data"][0]
        assert served["mode"] == "proactive" and served["revisions"] == 1
        record = Client(url).solve(iter(TEXT), settings={"revisions": 0})
        assert record["record"]["mode"] == "proactive"
        with pytest.raises(ServerError) as bad:
            Client(url).solve(iter(TEXT), settings={"revisions": 9})
        assert bad.value.code == "invalid_frame"
    finally:
        proc.terminate()
        proc.wait(10)
    for args, message in ((["--revisions", "1"], "apply to --mode proactive only"),
                          (["--mode", "proactive", "--revisions", "-1"], "revisions must be an integer >= 0")):
        refused = subprocess.run(cli + ["serve", "--model", "no-such-model", "--port", str(free_port())] + args,
                                 capture_output=True, timeout=60)
        assert refused.returncode != 0 and message in refused.stderr.decode() and b"Traceback" not in refused.stderr


def _up(httpx, url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
