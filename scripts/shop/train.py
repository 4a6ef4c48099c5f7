"""Train shop-tiny: a small Llama (GQA) on the QA corpus, on CPU, saved in Hugging Face format.

Loss is on the assistant's answer only (the prompt is context). Deterministic for a given seed
and thread count: the data order comes from the seed, and torch runs on a fixed 2 threads.

    python scripts/shop/train.py --corpus target/shop/corpus.jsonl --tok models/shop-tiny \
        --heldout models/shop-tiny/eval/heldout.jsonl --out models/shop-tiny --minutes 35
"""

import argparse
import json
import math
import os
import random
import time

import torch
from tokenizers import Tokenizer
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
from jinja2.sandbox import ImmutableSandboxedEnvironment

SHAPE = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)


_COMPILED = {}


def render(template, messages, generation_prompt):
    if template not in _COMPILED:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
        _COMPILED[template] = env.from_string(template)
    return _COMPILED[template].render(messages=messages, add_generation_prompt=generation_prompt)


def encode_rows(rows, tok, template):
    """(ids, first answer position) per row; answer = assistant content + <|end|>."""
    out = []
    for r in rows:
        prompt = render(template, r["messages"], True)
        full = render(template, r["messages"] + [{"role": "assistant", "content": r["answer"]}], False)
        p_ids = tok.encode(prompt, add_special_tokens=False).ids
        f_ids = tok.encode(full.rstrip("\n"), add_special_tokens=False).ids
        assert f_ids[: len(p_ids)] == p_ids, "prompt must tokenize as a prefix of the conversation"
        out.append((f_ids, len(p_ids)))
    return out


def batches(encoded, batch_size, rng):
    """Length-bucketed batches in a seeded random order: (input ids, labels) padded with -100."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i][0]), rng.random()))
    groups = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(groups)
    for g in groups:
        width = max(len(encoded[i][0]) for i in g)
        ids = torch.zeros(len(g), width, dtype=torch.long)
        labels = torch.full((len(g), width), -100, dtype=torch.long)
        for row, i in enumerate(g):
            seq, start = encoded[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, start: len(seq)] = torch.tensor(seq[start:])
        yield ids, labels


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def quick_eval(model, tok, template, rows, end_id, limit):
    """Greedy answers for the first `limit` held-out rows; key-fact hit rate per kind."""
    model.eval()
    hits, per_kind = 0, {}
    for r in rows[:limit]:
        ids = tok.encode(render(template, r["messages"], True), add_special_tokens=False).ids
        x = torch.tensor([ids])
        out = model.generate(x, max_new_tokens=48, do_sample=False, eos_token_id=end_id, pad_token_id=0)
        text = tok.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
        ok = r["expected"].lower() in text.lower() and not any(x.lower() in text.lower() for x in r.get("reject", []))
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
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--epochs", type=float, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for matmuls (AMX); weights stay f32")
    ap.add_argument("--max-steps", type=int, default=0, help="stop early (for timing trials)")
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = Tokenizer.from_file(os.path.join(args.tok, "tokenizer.json"))
    tcfg = json.load(open(os.path.join(args.tok, "tokenizer_config.json")))
    template = tcfg["chat_template"]
    end_id, pad_id = tok.token_to_id("<|end|>"), tok.token_to_id("<|pad|>")
    rows = [json.loads(line) for line in open(args.corpus)]
    held = [json.loads(line) for line in open(args.heldout)]
    encoded = encode_rows(rows, tok, template)
    print(f"{len(encoded)} examples, {sum(len(e[0]) for e in encoded)} tokens, longest {max(len(e[0]) for e in encoded)}")

    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), tie_word_embeddings=True, rms_norm_eps=1e-5,
                      rope_theta=10000.0, bos_token_id=None, eos_token_id=end_id, pad_token_id=pad_id,
                      attention_bias=False, mlp_bias=False, hidden_act="silu", initializer_range=0.02, **SHAPE)
    model = LlamaForCausalLM(cfg)
    print(f"parameters: {model.num_parameters():,}")
    steps_per_epoch = math.ceil(len(encoded) / args.batch)
    total = int(steps_per_epoch * args.epochs) if not args.max_steps else args.max_steps
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    step, t0, losses = 0, time.time(), []
    while step < total:
        for ids, labels in batches(encoded, args.batch, rng):
            if step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, args.lr, warmup=200)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = model(input_ids=ids, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
            if step % 100 == 0:
                print(f"step {step}/{total} loss {sum(losses[-100:]) / 100:.4f} {time.time() - t0:.0f}s", flush=True)
            if step % args.eval_every == 0 or step == total:
                acc, kinds = quick_eval(model, tok, template, held, end_id, limit=120)
                print(f"  held-out key-fact (first 120): {acc:.3f} {kinds}", flush=True)

    model.config.torch_dtype = torch.float32
    model.save_pretrained(args.out, safe_serialization=True)
    GenerationConfig(eos_token_id=end_id, pad_token_id=pad_id, do_sample=False, max_new_tokens=64).save_pretrained(args.out)
    print(f"saved -> {args.out} ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
