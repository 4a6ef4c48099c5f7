#!/usr/bin/env python3
"""Build tests/fixtures/hermes-tools: a tiny Llama trained until its greedy answers are
tool calls in the hermes format (`<tool_call>\n{json}\n</tool_call>`, as Qwen2.5 writes them),
with a Qwen2.5-style chat template (scripts/hermes_template.jinja) that renders `tools`,
assistant `tool_calls` and `role: tool` answers. Records transformers' rendering of each
conversation, its token ids, the greedy continuation and the tool calls parsed from it.

Deterministic (fixed seeds, one thread). Run with scripts/setup_python.sh's venv:
  .venv/bin/python scripts/make_tool_fixture.py
"""
import json
import os
import re
import shutil

import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "hermes-tools")
TEMPLATE = open(os.path.join(HERE, "hermes_template.jinja")).read()

TOOLS = [
    {"type": "function", "function": {
        "name": "get_price", "description": "Price of a product in euros",
        "parameters": {"type": "object", "properties": {"sku": {"type": "string", "description": "product code"}},
                       "required": ["sku"]}}},
    {"type": "function", "function": {
        "name": "get_stock", "description": "Units of a product in a store",
        "parameters": {"type": "object", "properties": {"sku": {"type": "string"},
                                                        "store": {"type": "string", "enum": ["Zürich", "Bern"]}},
                       "required": ["sku", "store"]}}},
]


def call(name, args):
    return {"type": "function", "function": {"name": name, "arguments": args}}


# (messages so far, the assistant turn the model must learn to write)
CONVERSATIONS = [
    ([{"role": "user", "content": "What does the drill DR-750 cost?"}],
     {"role": "assistant", "tool_calls": [call("get_price", {"sku": "DR-750"})]}),
    ([{"role": "user", "content": "Is the tent TN-420 in stock in Bern?"}],
     {"role": "assistant", "tool_calls": [call("get_stock", {"sku": "TN-420", "store": "Bern"})]}),
    ([{"role": "user", "content": "Price and stock of the kettle KT-180 in Zürich, please."}],
     {"role": "assistant", "tool_calls": [call("get_price", {"sku": "KT-180"}),
                                          call("get_stock", {"sku": "KT-180", "store": "Zürich"})]}),
    ([{"role": "user", "content": "What does the drill DR-750 cost?"},
      {"role": "assistant", "content": None, "tool_calls": [dict(call("get_price", {"sku": "DR-750"}), id="call_1")]},
      {"role": "tool", "tool_call_id": "call_1", "content": "{\"price\": 89.9}"}],
     {"role": "assistant", "content": "The drill DR-750 costs 89.90 euros."}),
]


def train_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=640, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts * 4, trainer=trainer)
    # As in Qwen2.5: the call markers are added tokens but not special ones.
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                    AddedToken("</tool_call>", special=False, normalized=False)])
    return tok


def render(hf_tok, messages, **kw):
    return hf_tok.apply_chat_template(messages, tools=TOOLS, tokenize=False, **kw)


def parse_calls(text):
    calls = []
    for body in re.findall(r"<tool_call>\n(.*?)\n</tool_call>", text, re.S):
        obj = json.loads(body)
        calls.append({"name": obj["name"], "arguments": json.dumps(obj["arguments"], ensure_ascii=False)})
    content = re.sub(r"<tool_call>.*?</tool_call>", "", text, flags=re.S).strip()
    return content or None, calls


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(7)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    # Render with a throwaway tokenizer first: the texts train the real one.
    probe = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(["x"]), chat_template=TEMPLATE)
    full = [render(probe, m + [a]) for m, a in CONVERSATIONS]
    tok = train_tokenizer(full)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     chat_template=TEMPLATE)
    hf_tok.save_pretrained(OUT)
    eos = tok.token_to_id("<|im_end|>")
    config = transformers.LlamaConfig(vocab_size=len(hf_tok), hidden_size=96, intermediate_size=192,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=True,
                                      bos_token_id=None, eos_token_id=eos)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    seqs = [torch.tensor([hf_tok(t)["input_ids"]]) for t in full]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(400):
        loss = sum(model(s, labels=s).loss for s in seqs) / len(seqs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.generation_config.eos_token_id = [eos]
    model.save_pretrained(OUT)

    m = AutoModelForCausalLM.from_pretrained(OUT, dtype=torch.float32).eval()
    loaded = transformers.AutoTokenizer.from_pretrained(OUT)
    record = dict(transformers_version=transformers.__version__, torch_version=torch.__version__,
                  train_loss=float(loss), tools=TOOLS, conversations=[])
    for messages, answer in CONVERSATIONS:
        rendered = render(loaded, messages, add_generation_prompt=True)
        ids = loaded(rendered)["input_ids"]
        with torch.no_grad():
            out = m.generate(torch.tensor([ids]), max_new_tokens=80, do_sample=False, eos_token_id=[eos])
        gen = out[0, len(ids):].tolist()
        text = loaded.decode(gen, skip_special_tokens=True)
        content, calls = parse_calls(text)
        want_content, want_calls = parse_calls(render(loaded, messages + [answer])[len(rendered):].split("<|im_end|>")[0])
        assert (content, calls) == (want_content, want_calls), f"not learned: {text!r}"
        record["conversations"].append(dict(messages=messages, rendered=rendered, input_ids=ids,
                                            greedy_ids=gen, greedy_text=text, content=content, tool_calls=calls))
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
    print(f"wrote {OUT}; train loss {float(loss):.4f}")


if __name__ == "__main__":
    main()
