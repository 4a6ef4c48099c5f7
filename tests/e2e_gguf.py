#!/usr/bin/env python3
"""The real SmolLM2-135M-Instruct GGUF behind `aisle serve`, through the official openai SDK.

Usage: e2e_gguf.py AISLE_BINARY GGUF_FILE GOLDEN_JSON  (run by scripts/test_e2e.sh)
With `--quantize none` (f32, every weight dequantized) the greedy chat answer to the golden's
first chat prompt must be transformers' ("The capital of France is Paris.", then <|im_end|>:
the golden's greedy ids; the prompt rendered with the model's own chat template); with the
file's own formats (the default) it must be a sensible answer. `aisle inspect` must print the
config, the formats and the memory. Prints one line per check; exits non-zero on failure.
"""
import json
import subprocess
import sys

from e2e_openai import Server, check, results

BIN, GGUF, GOLDEN = sys.argv[1], sys.argv[2], sys.argv[3]
golden = json.load(open(GOLDEN))
chat = next(p for p in golden["prompts"] if p["kind"] == "chat")


def greedy(srv, stream=False):
    c = srv.client()
    args = dict(model="smollm2", messages=chat["messages"], max_tokens=golden["steps"], temperature=0)
    if not stream:
        r = c.chat.completions.create(**args)
        assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
        return r.choices[0].message.content, r.usage
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(stream=True, **args) if ch.choices)
    return text, None


def exact_checks():
    srv = Server("--quantize", "none", model=GGUF, name="smollm2")
    try:
        want = "The capital of France is Paris."
        eos = 2  # <|im_end|>: the answer is the golden's greedy ids up to it
        assert eos in chat["greedy"], chat["greedy"]

        def unary():
            text, usage = greedy(srv)
            assert text == want, f"{text!r} != {want!r}"
            assert usage.prompt_tokens == len(chat["input_ids"]), usage
            assert usage.completion_tokens in (chat["greedy"].index(eos), chat["greedy"].index(eos) + 1), usage

        def streamed():
            text, _ = greedy(srv, stream=True)
            assert text == want, f"{text!r} != {want!r}"

        check("gguf f32: greedy chat answer equals transformers'", unary)
        check("gguf f32: streamed answer equals transformers'", streamed)
    finally:
        srv.stop()


def as_stored_checks():
    # The golden's France prompt is a near tie in transformers itself (top two first tokens
    # 0.08 nats apart), and int8 activations flip it (as they flip Italy: the README's
    # accuracy table has the as-stored figures); Germany has a clear answer.
    srv = Server(model=GGUF, name="smollm2")
    try:
        def sensible():
            c = srv.client()
            for country, city in [("Germany", "Berlin")]:
                r = c.chat.completions.create(model="smollm2", max_tokens=32, temperature=0,
                                              messages=[{"role": "user", "content": f"What is the capital of {country}?"}])
                assert city in r.choices[0].message.content, r.choices[0].message.content

        check("gguf as stored (q4_k/q8_0 panels): a clear question gets the right city", sensible)
    finally:
        srv.stop()


def inspect_check():
    out = subprocess.run([BIN, "inspect", "--model", GGUF], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for needle in ["(GGUF)", "llama", "576 / 1536", "Q4_1 ×210", "Q4K ×120, Q8_0 ×1", "MiB"]:
        assert needle in out.stdout, f"{needle!r} missing from inspect output:\n{out.stdout}"


exact_checks()
as_stored_checks()
check("aisle inspect on the gguf prints config, formats and memory", inspect_check)
failed = [n for n, e in results if e]
print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
