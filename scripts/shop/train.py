"""Train shop-tiny: a small Llama (GQA) on tool-using conversations, on CPU, saved in Hugging
Face format.

Loss is on the model's own turns after the last question: its tool calls and its answer (the
question, the tool results and earlier turns are context). Deterministic for a given seed and
thread count: the data order comes from the seed, and torch runs on a fixed 2 threads. The
quick evaluation runs the tool loop, executing calls with `aisle catalog call`.

    python scripts/shop/train.py --corpus target/shop/corpus.jsonl --tools target/shop/tools.json \
        --tok models/shop-tiny --heldout models/shop-tiny/eval/heldout.jsonl \
        --catalog models/shop-tiny/catalog.json --aisle target/release/aisle --out models/shop-tiny
"""

import argparse
import itertools
import json
import math
import os
import random
import re
import subprocess
import time

import torch
from tokenizers import Tokenizer
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from tokenizer import SPECIAL
from jinja2.sandbox import ImmutableSandboxedEnvironment

SHAPE = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=4, head_dim=32, max_position_embeddings=1024)


_COMPILED = {}


def render(template, messages, generation_prompt, tools=None):
    """The chat template as transformers renders it (its `tojson` is json.dumps, unescaped)."""
    if template not in _COMPILED:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
        env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
        _COMPILED[template] = env.from_string(template)
    return _COMPILED[template].render(messages=messages, add_generation_prompt=generation_prompt, tools=tools)


def encode_rows(rows, tok, template, tools):
    """(ids, [(start, end)] trained spans, copy mask) per row: each model turn from `train_from`
    on, with its <|end|>. The copy mask marks trained tokens that occur earlier in the row (names,
    codes, prices quoted from the question or a tool result)."""
    out = []
    for r in rows:
        msgs = r["messages"]
        full = render(template, msgs, False, tools).rstrip("\n")
        f_ids = tok.encode(full, add_special_tokens=False).ids
        spans, copy = [], []
        for i in range(r["train_from"], len(msgs)):
            if msgs[i]["role"] != "assistant":
                continue
            p_ids = tok.encode(render(template, msgs[:i], True, tools), add_special_tokens=False).ids
            e_ids = tok.encode(render(template, msgs[: i + 1], False, tools).rstrip("\n"), add_special_tokens=False).ids
            assert f_ids[: len(e_ids)] == e_ids and e_ids[: len(p_ids)] == p_ids, "turns must tokenize as prefixes"
            spans.append((len(p_ids), len(e_ids)))
            seen = set(p_ids)
            copy.extend(t for t in range(len(p_ids), len(e_ids)) if f_ids[t] in seen)
        out.append((f_ids, spans, copy))
    return out


def batches(encoded, batch_size, rng, copy_weight):
    """Length-bucketed batches in a seeded random order: (input ids, labels padded with -100,
    per-label loss weights: `copy_weight` on copied tokens, 1 elsewhere)."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i][0]), rng.random()))
    groups = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(groups)
    for g in groups:
        width = max(len(encoded[i][0]) for i in g)
        ids = torch.zeros(len(g), width, dtype=torch.long)
        labels = torch.full((len(g), width), -100, dtype=torch.long)
        weights = torch.ones(len(g), width)
        for row, i in enumerate(g):
            seq, spans, copy = encoded[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            for start, end in spans:
                labels[row, start:end] = torch.tensor(seq[start:end])
            if copy:
                weights[row, torch.tensor(copy)] = copy_weight
        yield ids, labels, weights


def copy_batches(rng, steps, batch_size, vocab, space_id, end_id, first_id):
    """A warm-up task that teaches copying before the conversations: a run of random "words"
    (1-3 random tokens each, a space token between them), <|end|>, the same run again, trained on
    the repeat. Spaces make "the token after this one" ambiguous, as in real names, so the model
    must match longer prefixes, as it does when it quotes a name or a price from a tool result."""
    for _ in range(steps):
        seqs = []
        for _ in range(batch_size):
            words = [[rng.randrange(first_id, vocab) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(2, 12))]
            run = []
            for i, w in enumerate(words):
                run += ([space_id] if i else []) + w
            run.append(end_id)
            seqs.append(run + run)
        width = max(len(q) for q in seqs)
        ids = torch.zeros(batch_size, width, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        for row, q in enumerate(seqs):
            ids[row, : len(q)] = torch.tensor(q)
            half = len(q) // 2
            labels[row, half: len(q)] = torch.tensor(q[half:])
        yield ids, labels, torch.ones(batch_size, width)


def weighted_loss(logits, labels, weights):
    """Mean next-token cross-entropy over the trained labels, weighted; and the plain mean."""
    logits, labels, weights = logits[:, :-1].float(), labels[:, 1:], weights[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                            ignore_index=-100, reduction="none")
    mask = (labels.reshape(-1) != -100).float()
    w = weights.reshape(-1) * mask
    return (nll * w).sum() / w.sum(), (nll * mask).sum() / mask.sum()


def lr_at(step, total, peak, warmup, decay=0.25):
    """Warmup, then constant, then a linear decay to 5% over the last `decay` of the steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    start = int(total * (1 - decay))
    if step < start:
        return peak
    return peak * (1 - 0.95 * (step - start) / max(1, total - start))


CALL = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.S)


def run_tools(aisle, catalog, calls):
    lines = "".join(json.dumps(c) + "\n" for c in calls)
    return subprocess.run([aisle, "catalog", "call", catalog], input=lines, capture_output=True, text=True,
                          check=True).stdout.splitlines()


@torch.no_grad()
def answer_with_tools(model, tok, template, tools, messages, end_id, aisle, catalog, rounds=3):
    """Greedy answer, running the tool calls the model writes (at most `rounds` turns of calls)."""
    messages = list(messages)
    for _ in range(rounds):
        ids = tok.encode(render(template, messages, True, tools), add_special_tokens=False).ids
        out = model.generate(torch.tensor([ids]), max_new_tokens=96, do_sample=False, eos_token_id=end_id,
                             pad_token_id=0)
        text = tok.decode(out[0, len(ids):].tolist(), skip_special_tokens=False).replace("<|end|>", "")
        bodies = CALL.findall(text)
        if not bodies:
            return text.strip()
        try:
            calls = [json.loads(b) for b in bodies]
        except json.JSONDecodeError:
            return text.strip()
        tool_calls = [{"id": f"call_{i}", "type": "function", "function": c} for i, c in enumerate(calls)]
        messages.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
        for c, r in zip(tool_calls, run_tools(aisle, catalog, calls)):
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": r})
    return ""


def quick_eval(model, tok, template, tools, rows, end_id, limit, aisle, catalog):
    """Key-fact hit rate per kind over the first `limit` held-out rows, with the tool loop."""
    model.eval()
    hits, per_kind = 0, {}
    for r in rows[:limit]:
        text = answer_with_tools(model, tok, template, tools, r["messages"], end_id, aisle, catalog).lower()
        ok = r["expected"].lower() in text and not any(x.lower() in text for x in r.get("reject", []))
        hits += ok
        k = r["kind"].split("/")[0]
        a, b = per_kind.get(k, (0, 0))
        per_kind[k] = (a + ok, b + 1)
    model.train()
    return hits / max(1, min(limit, len(rows))), per_kind


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tok", required=True, help="folder with tokenizer.json and tokenizer_config.json")
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--tools", required=True, help="the tool definitions (an OpenAI tools array)")
    ap.add_argument("--catalog", required=True, help="the held-out set's catalog")
    ap.add_argument("--aisle", required=True, help="the aisle binary (runs tool calls in the quick eval)")
    ap.add_argument("--eval-limit", type=int, default=120)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--epochs", type=float, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for matmuls (AMX); weights stay f32")
    ap.add_argument("--max-steps", type=int, default=0, help="the schedule's length in steps (default: the epochs')")
    ap.add_argument("--stop-at", type=int, default=0, help="stop after this step, keeping the schedule (pilots)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--decay", type=float, default=0.25, help="share of the steps the LR decays over, at the end")
    ap.add_argument("--init", help="start from this model's weights (a second phase) instead of a fresh one")
    ap.add_argument("--rows", type=int, default=0, help="only the corpus' first N conversations")
    ap.add_argument("--copy-steps", type=int, default=800, help="steps of the copying warm-up task first")
    ap.add_argument("--copy-weight", type=float, default=3.0,
                    help="loss weight of trained tokens that occur earlier in the conversation (copies)")
    ap.add_argument("--layers", type=int, default=SHAPE["num_hidden_layers"])
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = Tokenizer.from_file(os.path.join(args.tok, "tokenizer.json"))
    tcfg = json.load(open(os.path.join(args.tok, "tokenizer_config.json")))
    template = tcfg["chat_template"]
    end_id, pad_id = tok.token_to_id("<|end|>"), tok.token_to_id("<|pad|>")
    rows = [json.loads(line) for line in open(args.corpus)]
    rows = rows[: args.rows] if args.rows else rows
    held = [json.loads(line) for line in open(args.heldout)]
    tools = json.load(open(args.tools))
    encoded = encode_rows(rows, tok, template, tools)
    print(f"{len(encoded)} examples, {sum(len(e[0]) for e in encoded)} tokens, longest {max(len(e[0]) for e in encoded)}")

    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), tie_word_embeddings=True, rms_norm_eps=1e-5,
                      rope_theta=10000.0, bos_token_id=None, eos_token_id=end_id, pad_token_id=pad_id,
                      attention_bias=False, mlp_bias=False, hidden_act="silu", initializer_range=0.02,
                      **{**SHAPE, "num_hidden_layers": args.layers})
    model = LlamaForCausalLM.from_pretrained(args.init) if args.init else LlamaForCausalLM(cfg)
    print(f"parameters: {model.num_parameters():,}")
    steps_per_epoch = math.ceil(len(encoded) / args.batch)
    total = args.copy_steps + int(steps_per_epoch * args.epochs) if not args.max_steps else args.max_steps
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    step, t0, losses = 0, time.time(), []
    stop = min(total, args.stop_at) if args.stop_at else total
    space_id = tok.token_to_id("Ġ")
    warm = copy_batches(rng, args.copy_steps, 64, tok.get_vocab_size(), space_id, end_id, first_id=len(SPECIAL))
    while step < stop:
        data = batches(encoded, args.batch, rng, args.copy_weight)
        for ids, labels, weights in itertools.chain(warm, data):
            if step >= stop:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, args.lr, args.warmup, args.decay)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(input_ids=ids).logits
            loss, plain = weighted_loss(logits, labels, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(plain.item())
            step += 1
            if step % 100 == 0:
                print(f"step {step}/{total} loss {sum(losses[-100:]) / 100:.4f} {time.time() - t0:.0f}s", flush=True)
            if step % args.eval_every == 0 or step == stop:
                acc, kinds = quick_eval(model, tok, template, tools, held, end_id, args.eval_limit, args.aisle,
                                        args.catalog)
                print(f"  held-out key-fact (first {args.eval_limit}): {acc:.3f} {kinds}", flush=True)

    model.config.torch_dtype = torch.float32
    model.save_pretrained(args.out, safe_serialization=True)
    GenerationConfig(eos_token_id=end_id, pad_token_id=pad_id, do_sample=False, max_new_tokens=128).save_pretrained(args.out)
    print(f"saved -> {args.out} ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
