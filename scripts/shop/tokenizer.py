"""Byte-level BPE tokenizer for shop-tiny, trained on the QA corpus, plus its chat template.

Digit runs are split into pairs from the left ("1272" -> "12" "72", "A8" -> "A" "8") and every
space is a token of its own; the rest is GPT-2 style byte-level BPE. Pairs make a model code or a
price few, distinctive tokens, so copying one from a tool result is a short, unambiguous chain
(with single digits, "after 2 comes ..." matches every 2 in the context). Writes tokenizer.json and tokenizer_config.json (with the chat template).

    python scripts/shop/tokenizer.py --corpus target/shop/corpus.jsonl --out models/shop-tiny --vocab 2048
"""

import argparse
import json
import os

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tools|>", "<|tool|>",
           "<tool_call>", "</tool_call>"]
# One turn per role marker, each closed by <|end|>; generation starts after "<|assistant|>\n".
# With tools, a first line lists their names; a model turn that calls tools writes Hermes-style
# blocks (`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one per call, the JSON
# as `tojson` prints it), and each result is a `<|tool|>` turn.
CHAT_TEMPLATE = (
    "{%- if tools %}{{ '<|tools|>\\n' }}"
    "{%- for t in tools %}{{ t.function.name if t.function is defined else t.name }}"
    "{%- if not loop.last %}{{ ' ' }}{%- endif %}{%- endfor %}{{ '<|end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'tool' %}{{ '<|tool|>\\n' + message['content'] | trim + '<|end|>\\n' }}"
    "{%- elif message['role'] == 'assistant' and message['tool_calls'] %}{{ '<|assistant|>\\n' }}"
    "{%- if message['content'] %}{{ message['content'] | trim + '\\n' }}{%- endif %}"
    "{%- for call in message['tool_calls'] %}{%- set f = call.function if call.function is defined else call %}"
    "{%- set args = f.arguments if f.arguments is string else f.arguments | tojson %}"
    "{{ '<tool_call>\\n{\"name\": \"' + f.name + '\", \"arguments\": ' + args + '}\\n</tool_call>' }}"
    "{%- if not loop.last %}{{ '\\n' }}{%- endif %}{%- endfor %}{{ '<|end|>\\n' }}"
    "{%- elif message['role'] in ['system', 'user', 'assistant'] %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] | trim + '<|end|>\\n' }}"
    "{%- else %}{{ raise_exception('roles must be system, user, assistant or tool') }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}"
)


def call_text(call):
    f = call["function"]
    return '{"name": "' + f["name"] + '", "arguments": ' + json.dumps(f["arguments"], ensure_ascii=False) + "}"


def texts(corpus_path):
    with open(corpus_path) as f:
        for line in f:
            row = json.loads(line)
            for m in row["messages"]:
                if m.get("content"):
                    yield m["content"]
                for c in m.get("tool_calls") or []:
                    yield call_text(c)


def train(corpus_path, vocab):
    tok = Tokenizer(models.BPE())
    # Spaces are tokens of their own, so a word is the same tokens wherever it appears: in a
    # question, after a quote in a tool call or result, in the answer. Copying a name from a
    # tool result into the answer is then copying tokens one for one.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"[0-9]{1,2}"), "isolated"), pre_tokenizers.Split(" ", "isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(corpus_path), trainer=trainer)
    return tok


def tokenizer_config():
    added = {}
    for i, t in enumerate(SPECIAL):
        added[str(i)] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
    return {
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": "<|end|>",
        "pad_token": "<|pad|>",
        "unk_token": None,
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=2048)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tok = train(args.corpus, args.vocab)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, indent=2)
        f.write("\n")
    print(f"tokenizer: {tok.get_vocab_size()} tokens -> {args.out}")


if __name__ == "__main__":
    main()
