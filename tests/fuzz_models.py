#!/usr/bin/env python3
"""Corrupted model directories: one defect at a time, loaded and run by `aisle generate`.

Usage: tests/fuzz_models.py AISLE_BINARY [--limit N] [--keep DIR] [--verbose]

Every case starts from the valid tiny llama fixture (tests/fixtures/llama) and breaks one thing:
a config number, the config's JSON, the safetensors header or data, the shard index, the
tokenizer, the chat template, the generation defaults, a file's kind (FIFO, symlink to
/dev/zero, directory, a link leaving the model directory), or seeded random bytes in one file.
Each case runs `aisle generate --chat --prompt hi --max-tokens 2` (load, template, tokenizer,
one forward pass) under a 4 GiB address-space cap and a 60 s deadline, and is classified:

- ok: it ran (the defect was harmless, e.g. a larger context)
- error: a clean non-zero exit with a message naming the model directory or one of its files
- refused: the model loads (`aisle inspect` passes) and the prompt is refused with a request
  error (a template that fails when rendered, a context of 3 positions)
- unnamed: a load error whose message names no file (fails the run)
- panic / hang / blowup (over 1 GiB resident or an allocation refused by the cap) / crash
  (killed by a signal): each fails the run.

Standard library only; the cases are generated deterministically (seeded), so a failure is
reproducible with --keep DIR (the case's directory is kept there).
"""

import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(ROOT, "fixtures", "llama")
MEM_CAP = 4 << 30       # address space per run
RSS_LIMIT = 1 << 30     # resident peak counted as a blowup
DEADLINE_S = 60         # a run this long is a hang (a healthy one takes well under 1 s)
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja", "generation_config.json"]
FAILING = ("unnamed", "panic", "hang", "blowup", "crash")


def read(name):
    with open(os.path.join(FIXTURE, name), "rb") as f:
        return f.read()


CONFIG = json.loads(read("config.json"))
WEIGHTS = read("model.safetensors")
HEADER_LEN = struct.unpack("<Q", WEIGHTS[:8])[0]
HEADER = json.loads(WEIGHTS[8:8 + HEADER_LEN])
DATA = WEIGHTS[8 + HEADER_LEN:]


# ---- one case = (class, label, edit); edit(dir) breaks the copied fixture in `dir` --------

def write(d, name, data):
    path = os.path.join(d, name)
    if os.path.lexists(path):
        os.remove(path)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def config_with(**changes):
    def edit(d):
        cfg = dict(CONFIG)
        for k, v in changes.items():
            if v is DROP:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        write(d, "config.json", json.dumps(cfg))
    return edit


DROP = object()
BIG = [2**31, 2**32 + 1, 2**53, 2**63 - 1, 2**64, 10**12, 10**8, 10**30]
ODD = [0, -1, 1, 3, 7, 0.5, -1e300, 1e308, "12", None, [], {}, True]
NUMERIC = ["num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
           "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
           "rms_norm_eps", "rope_theta", "bos_token_id", "eos_token_id", "sliding_window"]


def config_cases():
    for key in NUMERIC:
        for v in BIG + ODD:
            yield "config", f"{key}={v!r}", config_with(**{key: v})
        yield "config", f"{key} missing", config_with(**{key: DROP})
    for scaling in [{"rope_type": "linear", "factor": 0}, {"rope_type": "linear", "factor": -2},
                    {"rope_type": "dynamic", "factor": 1e308}, {"rope_type": "yarn"},
                    {"rope_type": "llama3", "factor": 8, "low_freq_factor": 0,
                     "high_freq_factor": 0, "original_max_position_embeddings": 0},
                    {"rope_type": "nonsense"}, {"factor": 2}, "linear", 5]:
        yield "config", f"rope_scaling={scaling!r}", config_with(rope_scaling=scaling)
    yield "config", "eos list with huge id", config_with(eos_token_id=[2, 2**40])
    yield "config", "architectures unknown", config_with(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    yield "config", "torch_dtype int8", config_with(torch_dtype="int8")
    text = json.dumps(CONFIG)
    for cut in [0, 1, 10, len(text) // 2, len(text) - 1]:
        yield "config", f"truncated at {cut}", lambda d, c=cut: write(d, "config.json", text[:c])
    yield "config", "not JSON", lambda d: write(d, "config.json", b"\x00\xff garbage {")
    yield "config", "a JSON array", lambda d: write(d, "config.json", "[1, 2, 3]")
    yield "config", "nested 100k deep", lambda d: write(d, "config.json", "[" * 100_000 + "]" * 100_000)
    yield "config", "NaN literal", lambda d: write(d, "config.json", text.replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": NaN'))
    yield "config", "100 MB (sparse)", lambda d: sparse(d, "config.json", 100 << 20)


def sparse(d, name, size):
    path = os.path.join(d, name)
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:
        f.truncate(size)


def safetensors(header, data=DATA, raw_header=None, length=None):
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    n = len(h) if length is None else length
    return struct.pack("<Q", n) + h + data


def header_with(edit_header):
    def edit(d):
        h = json.loads(json.dumps(HEADER))
        edit_header(h)
        write(d, "model.safetensors", safetensors(h))
    return edit


def tensor(name):
    return next(k for k in HEADER if name in k)


def weight_cases():
    emb, q = tensor("embed_tokens"), tensor("layers.0.self_attn.q_proj")
    for n in [0, 1, 7, HEADER_LEN + 1, len(WEIGHTS), 2**31, 2**63 - 1, 2**64 - 1]:
        yield "weights", f"header length {n}", lambda d, n=n: write(
            d, "model.safetensors", struct.pack("<Q", n) + WEIGHTS[8:])
    for cut in [0, 4, 8, 100, 8 + HEADER_LEN, 8 + HEADER_LEN + 1000, len(WEIGHTS) - 1]:
        yield "weights", f"truncated at {cut}", lambda d, c=cut: write(d, "model.safetensors", WEIGHTS[:c])
    yield "weights", "header not JSON", lambda d: write(
        d, "model.safetensors", safetensors(None, raw_header=b"{not json" + b" " * 50))
    for dtype in ["F16", "BF16", "I64", "U8", "BOOL", "F64", "F8_E4M3", "Q4", ""]:
        yield "weights", f"{q} dtype {dtype}", header_with(lambda h, t=dtype: h[q].update(dtype=t))
    for shape in [[64], [64, 65], [63, 64], [0, 64], [-1, 64], [2**40, 2**40], [64, 64, 1], []]:
        yield "weights", f"{q} shape {shape}", header_with(lambda h, s=shape: h[q].update(shape=s))
    for offs in [[0, 1], [10, 5], [0, 2**63], [len(DATA), len(DATA) + 16384], [-16, 16384],
                 [1, 16385], ["a", "b"], [0]]:
        yield "weights", f"{q} offsets {offs}", header_with(lambda h, o=offs: h[q].update(data_offsets=o))
    yield "weights", "embedding shares q_proj's bytes", header_with(
        lambda h: h[emb].update(data_offsets=h[q]["data_offsets"]))
    yield "weights", "a tensor missing", header_with(lambda h: h.pop(q))
    yield "weights", "an extra layer", header_with(
        lambda h: h.update({k.replace("layers.1.", "layers.2."): v for k, v in list(h.items()) if "layers.1." in k}))
    yield "weights", "metadata not strings", header_with(lambda h: h.update(__metadata__={"format": 5}))
    yield "weights", "duplicate tensor name", lambda d: write(d, "model.safetensors", duplicate_header())
    yield "weights", "no tensors", lambda d: write(d, "model.safetensors", safetensors({}, data=b""))
    yield "weights", "absent", lambda d: os.remove(os.path.join(d, "model.safetensors"))


def duplicate_header():
    """A header naming q_proj twice, the second time over the embedding's bytes."""
    q = tensor("layers.0.self_attn.q_proj")
    text = json.dumps(HEADER)
    extra = json.dumps({q: HEADER[tensor("embed_tokens")]})[1:-1]
    return safetensors(None, raw_header=(text[:-1] + ", " + extra + "}").encode())


def shard_cases():
    def index(weight_map, shard_to=None):
        def edit(d):
            os.rename(os.path.join(d, "model.safetensors"), os.path.join(d, shard_to or "model-00001-of-00001.safetensors"))
            write(d, "model.safetensors.index.json", json.dumps({"metadata": {}, "weight_map": weight_map}))
        return edit
    every = lambda shard: {k: shard for k in HEADER if k != "__metadata__"}
    yield "shards", "index leaves the directory (../)", index(every("../model.safetensors"))
    yield "shards", "index names an absolute path", index(every("/etc/hostname"))
    yield "shards", "index names a missing shard", index(every("model-00002-of-00002.safetensors"))
    yield "shards", "index names the index itself", index(every("model.safetensors.index.json"))
    yield "shards", "index names a subdirectory", index(every("sub"), None)
    yield "shards", "index weight_map not an object", index([1, 2])
    yield "shards", "index not JSON", lambda d: (
        os.rename(os.path.join(d, "model.safetensors"), os.path.join(d, "model-00001-of-00001.safetensors")),
        write(d, "model.safetensors.index.json", "{"))


def tokenizer_cases():
    tok = json.loads(read("tokenizer.json"))

    def tok_with(mutate):
        def edit(d):
            t = json.loads(json.dumps(tok))
            mutate(t)
            write(d, "tokenizer.json", json.dumps(t))
        return edit
    text = json.dumps(tok)
    for cut in [0, 1, 100, len(text) // 2]:
        yield "tokenizer", f"truncated at {cut}", lambda d, c=cut: write(d, "tokenizer.json", text[:c])
    yield "tokenizer", "model missing", tok_with(lambda t: t.pop("model"))
    yield "tokenizer", "model type unknown", tok_with(lambda t: t["model"].update(type="Nonsense"))
    yield "tokenizer", "vocab empty", tok_with(lambda t: t["model"].update(vocab={}, merges=[]))
    yield "tokenizer", "merges name unknown tokens", tok_with(lambda t: t["model"].update(merges=["zz qq"]))
    for tid in [384, 1000, 2**31, 2**32 - 1]:
        yield "tokenizer", f"a vocab id {tid} past the embedding", tok_with(
            lambda t, i=tid: t["model"]["vocab"].update({"h": i, "i": i}))
        yield "tokenizer", f"an added token id {tid}", tok_with(
            lambda t, i=tid: t["added_tokens"].append(dict(t["added_tokens"][0], id=i, content="hi")))
    yield "tokenizer", "pre-tokenizer regex that backtracks", tok_with(lambda t: t.update(pre_tokenizer={
        "type": "Split", "pattern": {"Regex": "(.*a){12}b"}, "behavior": "Isolated", "invert": False}))
    yield "tokenizer", "pre-tokenizer regex invalid", tok_with(lambda t: t.update(pre_tokenizer={
        "type": "Split", "pattern": {"Regex": "(((("}, "behavior": "Isolated", "invert": False}))
    yield "tokenizer", "100 MB (sparse)", lambda d: sparse(d, "tokenizer.json", 100 << 20)
    yield "tokenizer", "absent", lambda d: os.remove(os.path.join(d, "tokenizer.json"))


TEMPLATES = {
    "nested loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "100 MB output": "{% for a in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "string doubling": "{% set s = 'xx' %}{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}{{ s }}",
    "unbounded recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "strftime_now %Q%Z%Y": "{{ strftime_now('%Q%Z%Y') }}{{ messages[0]['content'] }}",
    "strftime_now huge width": "{{ strftime_now('%9999999999Y') }}",
    "raise_exception": "{{ raise_exception('no') }}",
    "syntax error": "{% for %}",
    "unknown function": "{{ nonsense() }}",
    "empty output": "",
    "bad index": "{{ messages[99]['content'] }}",
    "integer overflow": "{{ 9223372036854775807 + 1 }}{{ 10 ** 100000 }}",
    "range huge step": "{% for i in range(0, 9223372036854775807, 1) %}{% endfor %}",
}


def template_cases():
    for label, src in TEMPLATES.items():
        yield "template", label, lambda d, s=src: write(d, "chat_template.jinja", s)
    yield "template", "10 MB template", lambda d: write(d, "chat_template.jinja", "{{ 'a' }}" * (10 << 17))
    yield "template", "tokenizer_config not JSON", lambda d: write(d, "tokenizer_config.json", "{")
    yield "template", "tokenizer_config template not a string", lambda d: (
        os.remove(os.path.join(d, "chat_template.jinja")),
        write(d, "tokenizer_config.json", json.dumps(dict(json.loads(read("tokenizer_config.json")), chat_template=5))))
    yield "template", "bos_token an object", lambda d: write(d, "tokenizer_config.json", json.dumps(
        dict(json.loads(read("tokenizer_config.json")), bos_token={"content": 5})))


def generation_cases():
    base = json.loads(read("generation_config.json"))
    for key, vals in {
        "temperature": [-1, 1e308, -0.0, "hot", None],
        "top_p": [-0.5, 2, 0, 1e308],
        "top_k": [-5, 2**63, 0.5],
        "max_new_tokens": [-1, 0, 2**63, 2**64],
        "repetition_penalty": [0, -1, 1e308],
        "eos_token_id": [2**40, -1, [2, 10**9], ["x"], []],
        "bos_token_id": [2**40, -3],
    }.items():
        for v in vals:
            yield "generation", f"{key}={v!r}", lambda d, k=key, v=v: write(
                d, "generation_config.json", json.dumps(dict(base, **{k: v})))
    yield "generation", "not JSON", lambda d: write(d, "generation_config.json", "nope")


def file_kind_cases():
    for name in FILES:
        def fifo(d, n=name):
            os.remove(os.path.join(d, n))
            os.mkfifo(os.path.join(d, n))

        def zero(d, n=name):
            os.remove(os.path.join(d, n))
            os.symlink("/dev/zero", os.path.join(d, n))

        def directory(d, n=name):
            os.remove(os.path.join(d, n))
            os.mkdir(os.path.join(d, n))

        def empty(d, n=name):
            write(d, n, b"")
        yield "files", f"{name} is a FIFO", fifo
        yield "files", f"{name} links to /dev/zero", zero
        yield "files", f"{name} is a directory", directory
        yield "files", f"{name} is empty", empty


def byte_cases(per_file=25, seed=18):
    rng = random.Random(seed)
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "chat_template.jinja"]:
        data = read(name)
        # Safetensors: mutate the 8-byte length and the JSON header, where parsing happens.
        span = 8 + HEADER_LEN if name == "model.safetensors" else len(data)
        for i in range(per_file):
            b = bytearray(data)
            for _ in range(rng.choice([1, 2, 4, 16])):
                pos = rng.randrange(span)
                b[pos] = rng.choice([0, 0xFF, ord("9"), ord("-"), ord("\""), ord("{"), rng.randrange(256)])
            yield "bytes", f"{name} random bytes #{i}", lambda d, n=name, b=bytes(b): write(d, n, b)


def cases():
    for gen in [config_cases, weight_cases, shard_cases, tokenizer_cases, template_cases,
                generation_cases, file_kind_cases, byte_cases]:
        yield from gen()


# ---- running one case ---------------------------------------------------------------------

def cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEM_CAP, MEM_CAP))


def classify(code, rss, err, timed_out, d):
    if timed_out:
        return "hang"
    if "panicked" in err or code == 101:
        return "panic"
    if rss > RSS_LIMIT or "memory allocation of" in err:
        return "blowup"
    if code < 0:
        return "crash"
    if code == 0:
        return "ok"
    named = d in err or any(n in err for n in FILES + ["model.safetensors.index.json"])
    return "error" if named else "unnamed"


def run_case(binary, d, command, *args):
    """Run `aisle COMMAND --model d ARGS`: (exit code, peak RSS bytes, stderr, timed out, seconds)."""
    t0 = time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [binary, command, "--model", d, *args],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, preexec_fn=cap_memory,
            start_new_session=True)
        timed_out, status, usage = False, None, None
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = st, ru
            elif time.time() - t0 > DEADLINE_S:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                time.sleep(0.005)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return proc.returncode, usage.ru_maxrss * 1024, text, timed_out, time.time() - t0


def one(binary, work, index, case):
    cls, label, edit = case
    d = os.path.join(work, f"case{index:04d}")
    shutil.copytree(FIXTURE, d, symlinks=True)
    for golden in ["golden.json", "golden.safetensors"]:
        os.remove(os.path.join(d, golden))
    edit(d)
    code, rss, err, timed_out, secs = run_case(binary, d, "generate", "--chat", "--prompt", "hi",
                                               "--max-tokens", "2", "--threads", "1")
    outcome = classify(code, rss, err, timed_out, d)
    if outcome == "unnamed":
        # The model loads (`inspect` passes) and this prompt is refused: a request error
        # ("chat template failed: …", "the prompt is empty"), which names no file by design.
        loads = run_case(binary, d, "inspect")
        if classify(*loads[:4], d) == "ok":
            outcome = "refused"
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return cls, label, outcome, secs, f"{last} [rss {rss >> 20} MiB]", d


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        sys.exit(2)
    binary = os.path.abspath(args[0])
    limit = int(args[args.index("--limit") + 1]) if "--limit" in args else None
    keep = args[args.index("--keep") + 1] if "--keep" in args else None
    verbose = "--verbose" in args
    all_cases = list(cases())[:limit]
    work = keep or tempfile.mkdtemp(prefix="aisle-fuzz-models.")
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda ic: one(binary, work, *ic), enumerate(all_cases)))
    report(results, time.time() - t0, verbose)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if any(r[2] in FAILING for r in results) else 0)


def report(results, secs, verbose):
    classes = sorted({r[0] for r in results}, key=[r[0] for r in results].index)
    outcomes = ["ok", "error", "refused", *FAILING]
    print(f"{'class':<12}" + "".join(f"{o:>8}" for o in outcomes))
    for c in classes:
        rows = [r for r in results if r[0] == c]
        print(f"{c:<12}" + "".join(f"{sum(r[2] == o for r in rows):>8}" for o in outcomes))
    print(f"{'all':<12}" + "".join(f"{sum(r[2] == o for r in results):>8}" for o in outcomes))
    slowest = max(results, key=lambda r: r[3])
    print(f"{len(results)} corrupted model directories in {secs:.0f} s; slowest {slowest[3]:.1f} s ({slowest[0]}: {slowest[1]})")
    for cls, label, outcome, s, last, d in results:
        if outcome in FAILING or verbose:
            print(f"  {outcome:<8} {cls}: {label} ({s:.1f} s): {last[:300]}")


if __name__ == "__main__":
    main()
