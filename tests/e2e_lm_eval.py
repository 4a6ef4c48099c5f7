#!/usr/bin/env python3
"""lm-evaluation-harness against a real `aisle serve`, with task definitions written here (no
hub download):

- `local-completions` (token-id prompts, `echo`, `logprobs: 1`; the tokenizer is the server's own
  through `tokenizer_backend=remote`: /tokenizer_info, /tokenize, /detokenize) runs a
  multiple-choice loglikelihood task. Its contexts and choices are cut from the golden prompts of
  the mistral fixture, so every choice's loglikelihood can be computed directly from the
  transformers logits committed in tests/fixtures/mistral/golden.safetensors; they must agree
  within 1e-4, and the greedy flags must match too.
- `local-chat-completions` runs a `generate_until` task; its answers must equal what the chat
  endpoint answers for the same request.

Usage: e2e_lm_eval.py AISLE_BINARY  (run by scripts/test_e2e.sh, in target/e2e-lm-venv)
"""
import json
import math
import os
import struct
import sys
import tempfile
import urllib.request

import numpy as np

sys.argv = [sys.argv[0], sys.argv[1], os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "mistral")]
import e2e_openai as base  # noqa: E402  (shares the server harness and the result list)

FIXTURE = base.MODEL
TOL = 1e-4


def post(srv, path, body):
    req = urllib.request.Request(srv.base + path, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def golden_logits():
    """The golden prompt logits (f32) by tensor name, read straight from the safetensors file."""
    with open(os.path.join(FIXTURE, "golden.safetensors"), "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(t["shape"]).astype(np.float64)
    return out


def golden_scores(logits, ids):
    """HF's logprob of each token after the first, and whether it was the argmax."""
    lp, greedy = [], []
    for j in range(1, len(ids)):
        row = logits[j - 1]
        m = row.max()
        norm = m + math.log(np.exp(row - m).sum())
        lp.append(row[ids[j]] - norm)
        greedy.append(int(row.argmax()) == ids[j])
    return lp, greedy


def mc_docs(srv):
    """Docs cut from the golden prompts: a context and three continuations ending at token
    boundaries, each with HF's expected (loglikelihood, is_greedy)."""
    golden = json.load(open(os.path.join(FIXTURE, "golden.json")))
    logits = golden_logits()
    docs = []
    for i, p in enumerate(golden["prompts"]):
        ids = p["input_ids"]
        lp, greedy = golden_scores(logits[f"p{i}.f32.prompt_logits"], ids)
        cut = len(ids) // 2
        text = lambda e: post(srv, "/detokenize", {"tokens": ids[:e]})["prompt"]  # noqa: E731
        context = text(cut)
        choices, expected = [], []
        for end in (cut + 1, cut + 2, len(ids)):
            whole = text(end)
            assert whole.startswith(context), (whole, context)
            # lm-eval tokenizes context + choice with the server's tokenizer: it must give the
            # golden ids, or the golden logits would not apply.
            assert post(srv, "/tokenize", {"prompt": whole, "add_special_tokens": False})["tokens"] == ids[:end]
            choices.append(whole[len(context):])
            expected.append((sum(lp[cut - 1:end - 1]), all(greedy[cut - 1:end - 1])))
        docs.append({"context": context, "choices": choices, "expected": expected})
    return docs


MC_TASK = """task: aisle_golden_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: 0
target_delimiter: ""
metric_list:
  - metric: acc
"""

GEN_TASK = """task: aisle_shop_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
"""


def write_task(tmp, name, template, docs):
    data = os.path.join(tmp, f"{name}.jsonl")
    with open(data, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    with open(os.path.join(tmp, f"{name}.yaml"), "w") as f:
        f.write(template.format(data=data))


def evaluate(tmp, task, model, model_args, **kw):
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task],
                                  task_manager=TaskManager(include_path=tmp), log_samples=True, **kw)
    return sorted(out["samples"][task], key=lambda s: s["doc_id"])


def main():
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OPENAI_API_KEY", "unused")
    srv = base.Server(key=None)
    tmp = tempfile.mkdtemp(prefix="aisle-lm-eval-")
    try:
        def loglikelihoods_equal_transformers():
            docs = mc_docs(srv)
            write_task(tmp, "aisle_golden_mc", MC_TASK, docs)
            samples = evaluate(tmp, "aisle_golden_mc", "local-completions",
                               f"base_url={srv.base}/v1/completions,model=shop,tokenizer_backend=remote,"
                               "tokenized_requests=True,num_concurrent=1,max_retries=1", batch_size=2)
            assert len(samples) == len(docs)
            worst = 0.0
            for s, d in zip(samples, docs):
                got = [(float(r[0][0]), bool(r[0][1]) if not isinstance(r[0][1], str) else r[0][1] == "True")
                       for r in s["resps"]]
                assert len(got) == len(d["expected"]), s["resps"]
                for (ll, greedy), (want, want_greedy) in zip(got, d["expected"]):
                    worst = max(worst, abs(ll - want))
                    assert abs(ll - want) <= TOL, (ll, want, d)
                    assert greedy == want_greedy, (greedy, want_greedy, d)
            print(f"     {sum(len(d['choices']) for d in docs)} loglikelihoods, max |difference| vs transformers {worst:.1e}")

        def generate_until_equals_the_chat_endpoint():
            docs = [{"question": q, "answer": "x"} for q in
                    ["Is the café grinder in stock?", "What is the wattage of this drill?"]]
            write_task(tmp, "aisle_shop_gen", GEN_TASK, docs)
            samples = evaluate(tmp, "aisle_shop_gen", "local-chat-completions",
                               f"base_url={srv.base}/v1/chat/completions,model=shop,num_concurrent=1,max_retries=1",
                               apply_chat_template=True)
            for s, d in zip(samples, docs):
                direct = post(srv, "/v1/chat/completions", {
                    "model": "shop", "messages": [{"role": "user", "content": d["question"]}],
                    "max_tokens": 8, "temperature": 0, "stop": ["\n\n"], "seed": 1234})
                want = direct["choices"][0]["message"]["content"]
                assert s["resps"][0][0] == want, (s["resps"], want)

        base.check("lm-eval local-completions: multiple-choice loglikelihoods equal transformers'",
                   loglikelihoods_equal_transformers)
        base.check("lm-eval local-chat-completions: generate_until equals the chat endpoint",
                   generate_until_equals_the_chat_endpoint)
    finally:
        srv.stop()
    base.finish("e2e lm-eval")


if __name__ == "__main__":
    main()
