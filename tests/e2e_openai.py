#!/usr/bin/env python3
"""End-to-end tests of `aisle serve` with the official openai SDK, over loopback only.

Usage: e2e_openai.py AISLE_BINARY MODEL_DIR  (run by scripts/test_e2e.sh)
Prints one line per check and a final 'N passed, N failed' line; exits non-zero on failure.
"""
import asyncio
import http.client
import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import openai
from openai import AsyncOpenAI, OpenAI

BIN, MODEL = sys.argv[1], sys.argv[2]
KEY = "sk-aisle-test"
results = []


def check(name, fn):
    try:
        fn()
        results.append((name, None))
        print(f"ok   {name}", flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure
        results.append((name, e))
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *extra, model=MODEL, name="shop", env=None, key=KEY, log=subprocess.PIPE):
        self.port = free_port()
        keys = ["--api-key", key] if key else []
        args = [BIN, "serve", "--port", str(self.port), *keys, "--block-size", "4", "--kv-cache-mb", "16", *extra]
        if model:
            args += ["--model", model, "--served-model-name", name]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, text=True,
                                     env={**os.environ, **(env or {})})
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def client(self, key=KEY):
        return OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=60)

    def metric(self, name):
        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as r:
            text = r.read().decode()
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def api_checks(srv):
    c = srv.client()
    msgs = [{"role": "user", "content": "Is the café grinder in stock?"}]

    def chat_basic():
        r = c.chat.completions.create(model="shop", messages=msgs, max_tokens=12, temperature=0,
                                      extra_body={"ignore_eos": True})
        assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
        assert r.usage.completion_tokens == 12 and r.usage.total_tokens == r.usage.prompt_tokens + 12
        assert r.choices[0].finish_reason == "length"

    def chat_stream_equals_non_stream():
        kw = dict(model="shop", messages=msgs, max_tokens=20, temperature=0.9, seed=3)
        full = c.chat.completions.create(**kw).choices[0].message.content
        again = c.chat.completions.create(**kw).choices[0].message.content
        assert full == again, "same seed, same text"
        text, usage = "", None
        for chunk in c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
            if chunk.usage:
                usage = chunk.usage
            for ch in chunk.choices:
                text += ch.delta.content or ""
        assert text == full, (text, full)
        assert usage is not None and usage.completion_tokens > 0

    def completions_stream_and_stop():
        kw = dict(model="shop", prompt="Emoji test: 🔨", max_tokens=16, temperature=0.8, seed=9)
        full = c.completions.create(**kw).choices[0].text
        streamed = "".join(ch.choices[0].text for ch in c.completions.create(stream=True, **kw) if ch.choices)
        assert streamed == full, (streamed, full)
        r = c.completions.create(model="shop", prompt="The cordless drill has a", temperature=0, stop=["att mo"])
        assert r.choices[0].text == " 750 w" and r.choices[0].finish_reason == "stop", r.choices[0]

    def logprobs():
        r = c.chat.completions.create(model="shop", messages=msgs, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        assert len(content) == 4 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)

    def error_classes():
        for exc, call in [
            (openai.BadRequestError, lambda: c.completions.create(model="shop", prompt="x", temperature=5)),
            (openai.AuthenticationError, lambda: srv.client("wrong").models.list()),
            (openai.NotFoundError, lambda: c.chat.completions.create(model="gpt-4", messages=msgs)),
        ]:
            try:
                call()
                raise AssertionError(f"expected {exc.__name__}")
            except exc:
                pass

    def rate_limit():
        # Capacity is max-seqs 4 + max-waiting 2: hold 6 streams open, the 7th gets 429.
        held = [c.completions.create(model="shop", prompt="The", max_tokens=200, stream=True,
                                     extra_body={"ignore_eos": True}) for _ in range(6)]
        try:
            c.completions.create(model="shop", prompt="x", max_tokens=2)
            raise AssertionError("expected RateLimitError")
        except openai.RateLimitError as e:
            assert e.response.headers.get("retry-after") == "1"
        finally:
            for s in held:
                s.close()

    def models_retrieve():
        m = c.models.retrieve("shop")
        assert m.id == "shop" and m.object == "model", m
        try:
            c.models.retrieve("gpt-4")
            raise AssertionError("expected NotFoundError")
        except openai.NotFoundError:
            pass

    prompts = ["The cordless drill has a", "Is the café grinder in stock?"]

    def one_by_one(n=1):
        return [ch.text for p in prompts
                for ch in c.completions.create(model="shop", prompt=p, max_tokens=6, temperature=0, n=n).choices]

    def prompt_lists():
        r = c.completions.create(model="shop", prompt=prompts, max_tokens=6, temperature=0, n=2)
        assert [ch.index for ch in r.choices] == [0, 1, 2, 3]
        assert [ch.text for ch in r.choices] == one_by_one(n=2)
        ids = [json.loads(urllib.request.urlopen(urllib.request.Request(
            srv.base + "/tokenize", json.dumps({"prompt": p}).encode(), {"content-type": "application/json"})).read())["tokens"]
            for p in prompts]
        r = c.completions.create(model="shop", prompt=ids, max_tokens=0, echo=True, logprobs=1)
        for ch, p, t in zip(r.choices, prompts, ids):
            lp = ch.logprobs.token_logprobs
            # Token ids echo as their decoding, special tokens kept (the fixture adds <s>).
            assert ch.text.endswith(p) and len(lp) == len(t) and lp[0] is None and all(x <= 0 for x in lp[1:]), ch

    def langchain_batch():
        from langchain_openai import OpenAI as LangChainOpenAI
        llm = LangChainOpenAI(base_url=srv.base + "/v1", api_key=KEY, model="shop", temperature=0,
                              max_tokens=6, max_retries=0)
        expected = one_by_one()
        assert llm.batch(prompts) == expected
        gen = llm.generate(prompts)  # one request carrying both prompts
        assert [g[0].text for g in gen.generations] == expected, gen

    for name, fn in [("chat basic + usage", chat_basic), ("chat stream == non-stream, same seed", chat_stream_equals_non_stream),
                     ("completions stream == non-stream, stop", completions_stream_and_stop), ("logprobs", logprobs),
                     ("error classes", error_classes), ("429 RateLimitError", rate_limit),
                     ("models.retrieve", models_retrieve), ("completions prompt lists, echo", prompt_lists),
                     ("LangChain OpenAI.batch and .generate", langchain_batch)]:
        check(name, fn)


def load_test(srv):
    async def one(client, i):
        stream = await client.chat.completions.create(
            model="shop", messages=[{"role": "user", "content": f"Is the tent number {i} in stock?"}],
            max_tokens=24, temperature=0.7, seed=i, stream=True)
        n = 0
        async for _ in stream:
            n += 1
            if i % 2 == 0 and n == 2:
                await stream.close()  # disconnect early
                return "closed"
        return "done"

    async def run():
        client = AsyncOpenAI(base_url=srv.base + "/v1", api_key=KEY, max_retries=0, timeout=120)
        return await asyncio.gather(*(one(client, i) for i in range(64)), return_exceptions=True)

    def body():
        outcomes = asyncio.run(run())
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert not errors, f"{len(errors)} failures, e.g. {errors[0]!r}"
        assert outcomes.count("closed") == 32 and outcomes.count("done") == 32
        deadline = time.time() + 10
        while time.time() < deadline and (srv.metric("aisle:num_requests_running") or srv.metric("aisle:kv_cache_usage_perc")):
            time.sleep(0.05)
        assert srv.metric("aisle:num_requests_running") == 0
        assert srv.metric("aisle:kv_cache_usage_perc") == 0, "all blocks free"
        assert (srv.metric('aisle:request_failure_total{reason="internal"}') or 0) == 0

    check("load: 64 streaming clients, half disconnect, no 5xx, blocks free", body)


def sigterm_test():
    # 20 ms per step: 40 tokens take ~0.8 s, so the requests are still generating at SIGTERM.
    srv = Server("--max-seqs", "8", "--shutdown-timeout", "30", "--step-delay-ms", "20")
    c = srv.client()
    # Streams read one chunk at a time stay in flight until consumed: deterministic drain.
    streams = [c.completions.create(model="shop", prompt="The", max_tokens=40, stream=True,
                                    extra_body={"ignore_eos": True}) for _ in range(3)]
    iters = [iter(s) for s in streams]
    for it in iters:
        next(it)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)

    def body():
        try:
            c.completions.create(model="shop", prompt="x", max_tokens=2)
            raise AssertionError("expected 503 after SIGTERM")
        except openai.APIStatusError as e:
            assert e.status_code == 503, e.status_code
        reasons = []
        for it in iters:
            last = None
            for chunk in it:
                if chunk.choices and chunk.choices[0].finish_reason:
                    last = chunk.choices[0].finish_reason
            reasons.append(last)
        assert reasons == ["length"] * 3, reasons
        assert srv.proc.wait(timeout=60) == 0

    check("SIGTERM: in-flight complete, new get 503, exit 0", body)


def bounded_shutdown_test():
    # 50 ms per step: the 200-token stream needs 10 s, far past the 1 s drain. A client that
    # stops mid-header would keep the process alive without the connection deadline.
    srv = Server("--max-seqs", "8", "--shutdown-timeout", "1", "--step-delay-ms", "50")
    c = srv.client()
    it = iter(c.completions.create(model="shop", prompt="The", max_tokens=200, stream=True,
                                   extra_body={"ignore_eos": True}))
    next(it)
    stalled = socket.create_connection(("127.0.0.1", srv.port))
    stalled.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    srv.proc.send_signal(signal.SIGTERM)

    def body():
        err = None
        try:
            for _ in it:
                pass
        except openai.APIError as e:
            err = e
        assert err is not None and "shutting down" in str(err), err
        code = srv.proc.wait(timeout=30)
        assert code == 0, code
        print(f"     (exited {time.time() - t0:.1f} s after SIGTERM with --shutdown-timeout 1)")
        stalled.close()

    check("SIGTERM with a stalled client and an unfinished stream: error event, bounded exit", body)


def metric_sum(srv, prefix):
    """The sum of every labelled series of counter `prefix` in /metrics."""
    with urllib.request.urlopen(srv.base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(prefix)}{{[^}}]*}} (\S+)$", text, re.M))


class Stalled:
    """`n` connections that send half a request header (or nothing at all, every other one)
    and never finish it; reopened as the server's header timeout closes them, so the pressure
    lasts."""

    def __init__(self, port, n):
        self.port, self.reopened, self.n = port, 0, 0
        self.sel = selectors.DefaultSelector()  # epoll: select() stops at descriptor 1024
        for _ in range(n):
            self.open()

    def open(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        if self.n % 2 == 0:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-")
        self.n += 1
        self.sel.register(s, selectors.EVENT_READ)

    def keep_up(self, stop):
        while not stop.is_set():
            for key, _ in self.sel.select(timeout=0.1):  # readable = closed by the server
                self.sel.unregister(key.fileobj)
                key.fileobj.close()
                self.open()
                self.reopened += 1

    def open_now(self):
        return len(self.sel.get_map())

    def close(self):
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


def post_json(conn, path, body):
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {KEY}"})
    r = conn.getresponse()
    r.read()
    return r.status


def soak_test():
    # Stalled connections as many as the descriptor limit allows (1,000 where it is high).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n_stalled = max(100, min(1000, hard - 300))
    header_timeout, seconds = 3, 8
    srv = Server("--header-timeout", str(header_timeout), "--body-timeout", "2",
                 "--max-connections", str(n_stalled + 50), "--shutdown-timeout", "1",
                 "--max-seqs", "8", "--max-waiting", "64", log=subprocess.DEVNULL)
    stalled = Stalled(srv.port, n_stalled)
    stop = threading.Event()
    normal, huge, slow = [], [], []  # (status, seconds) per request
    chat = json.dumps({"model": "shop", "max_tokens": 8, "messages": [
        {"role": "user", "content": "Is the tent in stock?"}]})
    big = json.dumps({"model": "shop", "messages": [{"role": "user", "content": "tent " * 700_000}]})

    def client(out, body):
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        while not stop.is_set():
            t0 = time.time()
            out.append((post_json(conn, "/v1/chat/completions", body), time.time() - t0))
        conn.close()

    def slow_body():
        # Headers complete, the body never comes: 408 after --body-timeout.
        while not stop.is_set():
            t0 = time.time()
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            conn.putrequest("POST", "/v1/chat/completions")
            for k, v in [("Content-Type", "application/json"), ("Authorization", f"Bearer {KEY}"),
                         ("Content-Length", "100000000")]:
                conn.putheader(k, v)
            conn.endheaders(b'{"model": "shop", ')
            r = conn.getresponse()
            r.read()
            slow.append((r.status, time.time() - t0))
            conn.close()

    threads = [threading.Thread(target=stalled.keep_up, args=(stop,))]
    threads += [threading.Thread(target=client, args=(normal, chat)) for _ in range(4)]
    threads += [threading.Thread(target=client, args=(huge, big)) for _ in range(2)]
    threads += [threading.Thread(target=slow_body) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=60)

    def body():
        assert normal and all(st == 200 for st, _ in normal), {st for st, _ in normal}
        assert huge and all(st == 400 for st, _ in huge), {st for st, _ in huge}
        assert slow and all(st == 408 for st, _ in slow), {st for st, _ in slow}
        lat = sorted(t for _, t in normal)
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"     ({n_stalled} stalled connections ({stalled.reopened} reopened after the header "
              f"timeout), {len(huge)} 3.5 MB prompts, {len(slow)} stalled bodies: {len(normal)} normal "
              f"requests, p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms)")
        # A normal client that had to wait for a slot (a stalled connection timing out) would
        # take at least the header timeout.
        assert p99 < header_timeout, f"normal-client p99 {p99:.2f} s"
        counted = metric_sum(srv, "aisle:request_success_total") + metric_sum(srv, "aisle:request_failure_total")
        sent = len(normal) + len(huge) + len(slow)
        assert counted == sent, f"metrics count {counted} requests, the clients sent {sent}"
        # Each stalled connection (with a header begun or not) was closed by the header
        # timeout at least once in the run, which is several timeouts long.
        assert stalled.reopened >= n_stalled, f"only {stalled.reopened} stalled connections were closed"
        open_at_exit = stalled.open_now()
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(timeout=30)
        took = time.time() - t0
        stalled.close()
        assert code == 0, code
        print(f"     (exited {took:.1f} s after SIGTERM, {open_at_exit} stalled connections open, "
              f"--shutdown-timeout 1)")
        assert took < 10, f"exit took {took:.1f} s"

    check("soak: stalled headers and bodies, huge prompts and normal clients at once", body)


def schemathesis_test():
    """OpenAI's published spec (tests/openapi/openai-trimmed.yaml: the four operations served)
    against a real server: every generated request must get no 5xx, and every response
    the spec documents must match its schema."""
    spec = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi", "openai-trimmed.yaml")
    tool = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    srv = Server("--max-seqs", "8", "--max-waiting", "512", "--default-max-tokens", "16", log=subprocess.DEVNULL)
    report = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"aisle-schemathesis-{os.getpid()}.ndjson")
    cmd = [tool, "run", spec, "--url", srv.base + "/v1", "-H", f"Authorization: Bearer {KEY}",
           "--checks", "not_a_server_error,response_schema_conformance", "--max-examples", "30",
           "--seed", "18", "--request-timeout", "60", "--no-color",
           # One worker: with two, hypothesis's shared example cache races now and then
           # (schemathesis 4.32.5 reports a FlakyFailure "Runtime Error" of its own).
           "--workers", "1",
           "--generation-database", "none",
           "--report", "ndjson", "--report-ndjson-path", report]

    def body():
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        statuses = {}
        with open(report) as f:
            for line in f:
                event = json.loads(line)
                for interaction in event.get("ScenarioFinished", {}).get("recorder", {}).get("interactions", {}).values():
                    code = (interaction.get("response") or {}).get("status_code")
                    statuses[code] = statuses.get(code, 0) + 1
        os.remove(report)
        total, errors = sum(statuses.values()), sum(n for c, n in statuses.items() if c and c >= 500)
        print(f"     ({total} requests, {errors} × 5xx; by status {dict(sorted(statuses.items(), key=str))})")
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert errors == 0 and total > 1000, statuses
        assert srv.stop() == 0

    check("schemathesis: OpenAI's spec, no 5xx, documented responses conform", body)


def shape(v):
    """The key structure of a JSON value (what a client's parser depends on)."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items() if k != "cost_usd"}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return type(v).__name__ if v is not None else None


def routing_test():
    remote = Server("--max-seqs", "16", model=os.path.join(os.path.dirname(MODEL), "llama"), name="big-model")
    cfg = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"aisle-e2e-{os.getpid()}.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[local]
model = "{MODEL}"
name = "shop"
price = {{ prompt_per_1m = 0.02, completion_per_1m = 0.04 }}

[[remote]]
name = "big"
base_url = "{remote.base}/v1"
api_key_env = "AISLE_E2E_REMOTE_KEY"
model = "big-model"
price = {{ prompt_per_1m = 0.15, completion_per_1m = 0.60 }}
max_retries = 1

[aliases]
smart = "big"

[routing]
fallback = "big"
""")
    local = Server("--config", cfg, "--max-seqs", "2", "--max-waiting", "0", "--step-delay-ms", "5",
                   model=None, env={"AISLE_E2E_REMOTE_KEY": KEY})
    c = local.client()
    msgs = [{"role": "user", "content": "Is the café grinder in stock?"}]

    def same_shapes():
        kw = dict(messages=msgs, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
        loc = c.chat.completions.with_raw_response.create(model="shop", **kw)
        rem = c.chat.completions.with_raw_response.create(model="smart", **kw)
        assert loc.headers["x-aisle-route"] == "local" and rem.headers["x-aisle-route"] == "remote:big"
        lj, rj = loc.parse().model_dump(), rem.parse().model_dump()
        assert rj["model"] == "big-model" and lj["model"] == "shop"
        assert shape(lj) == shape(rj), (shape(lj), shape(rj))
        assert rj["usage"]["cost_usd"] > 0 and lj["usage"]["cost_usd"] > 0
        ls = [ch.model_dump() for ch in c.chat.completions.create(model="shop", stream=True, **kw)]
        rs = [ch.model_dump() for ch in c.chat.completions.create(model="smart", stream=True, **kw)]
        # Different models give different numbers of content chunks; compare the kinds of chunk
        # and the first (role) and last (finish) ones.
        kinds = lambda chunks: {json.dumps(shape(x), sort_keys=True) for x in chunks}
        assert kinds(ls) == kinds(rs), (kinds(ls) ^ kinds(rs))
        assert shape(ls[0]) == shape(rs[0]) and shape(ls[-1]) == shape(rs[-1])
        assert ls[-1]["choices"][0]["finish_reason"] == rs[-1]["choices"][0]["finish_reason"] == "length"
        assert len({x["id"] for x in rs}) == 1 and rs[0]["id"].startswith("chatcmpl-")

    def burst_loses_nothing():
        async def one(client, i):
            r = await client.chat.completions.with_raw_response.create(
                model="shop", messages=msgs, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
            body = r.parse()
            assert body.choices[0].finish_reason == "length" and body.choices[0].message.content
            return r.headers["x-aisle-route"]

        async def run():
            client = AsyncOpenAI(base_url=local.base + "/v1", api_key=KEY, max_retries=0, timeout=60)
            return await asyncio.gather(*(one(client, i) for i in range(24)), return_exceptions=True)

        routes = asyncio.run(run())
        errors = [r for r in routes if isinstance(r, Exception)]
        assert not errors, f"{len(errors)} lost: {errors[0]!r}"
        assert routes.count("local") >= 1 and routes.count("remote:big") >= 1, routes

    try:
        check("routing: local and remote give identical response shapes", same_shapes)
        check("routing: a burst overflowing the local queue loses no request", burst_loses_nothing)
    finally:
        local.stop()
        remote.stop()
        os.remove(cfg)


def run_eval(*args):
    """`aisle eval --json` with per-item results; returns (report, [result rows])."""
    out = os.path.join("target", f"e2e-eval-{len(results)}.jsonl")
    proc = subprocess.run([BIN, "eval", "--limit", "80", "--json", "--results", out, *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    return json.loads(proc.stdout), rows


def shop_model_test():
    """The README's main job: `serve` with no --model serves the shipped shopping model."""
    srv = Server(model=None)
    catalog = json.load(open("models/shop-tiny/catalog.json"))["products"]

    def answers_a_catalog_question():
        p = catalog[42]
        r = srv.client().chat.completions.create(
            model="shop-tiny", messages=[{"role": "user", "content": f"How much is the {p['name']}?"}],
            max_tokens=48, temperature=0)
        text = r.choices[0].message.content
        assert f"${p['price']}" in text, text

    def eval_over_http_equals_in_process():
        local, local_rows = run_eval()
        remote, remote_rows = run_eval("--url", srv.base, "--api-key", KEY)
        assert remote["errors"] == 0, remote
        assert local["key_fact_accuracy"] == remote["key_fact_accuracy"], (local, remote)
        assert [r["output"] for r in local_rows] == [r["output"] for r in remote_rows]
        assert local["key_fact_accuracy"] >= 0.85, local

    try:
        check("shop model: serve without --model answers a catalog price", answers_a_catalog_question)
        check("shop model: aisle eval over HTTP equals in-process", eval_over_http_equals_in_process)
    finally:
        srv.stop()


def finish(label):
    """Print the summary line and exit non-zero if any check failed."""
    failed = [n for n, e in results if e]
    print(f"{label}: {len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


def run_suites(label, *suites):
    """Run each suite against one server on MODEL, then `finish`."""
    srv = Server(model=MODEL)
    try:
        for suite in suites:
            suite(srv)
    finally:
        srv.stop()
    finish(label)


def main():
    shop_model_test()
    # 5 ms per engine step keeps the 429 check's six held 200-token streams running while the
    # seventh request arrives (the native CPU backend finishes them in ~0.2 s otherwise).
    srv = Server("--max-seqs", "4", "--max-waiting", "2", "--step-delay-ms", "5")
    try:
        api_checks(srv)
    finally:
        srv.stop()
    srv = Server("--max-seqs", "32", "--max-waiting", "64")
    try:
        load_test(srv)
    finally:
        code = srv.stop()
        check("server exits 0 on SIGTERM", lambda: (_ for _ in ()).throw(AssertionError(code)) if code != 0 else None)
    sigterm_test()
    bounded_shutdown_test()
    soak_test()
    schemathesis_test()
    routing_test()
    finish("e2e")


if __name__ == "__main__":
    main()
