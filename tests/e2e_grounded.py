#!/usr/bin/env python3
"""End-to-end grounded answers: a real `aisle serve --model models/shop-grounded --catalog
shop.db` process answers product questions through its built-in tools with the openai SDK,
unary and streamed alike, reports the calls (`x-aisle-tools`, `aisle_tools`), and an edit
made with `aisle catalog set` while it runs is what the next answer's tool call reads: no
retraining, no restart. (How well the preview model reads questions and copies values is `aisle eval`'s
figure, not checked here.)

Usage: e2e_grounded.py AISLE_BINARY  (run by scripts/test_e2e.sh)
"""
import json
import os
import subprocess
import sys
import tempfile

sys.argv = [sys.argv[0], sys.argv[1], ""]
import e2e_openai as base  # noqa: E402  (shares the server harness and the result list)

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "shop-grounded")
CATALOG = os.path.join(MODEL, "catalog.json")


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def ask(c, question, **kw):
    raw = c.chat.completions.with_raw_response.create(
        model="shop", temperature=0, messages=[{"role": "user", "content": question}], **kw)
    return raw.headers, raw.parse()


def checks(srv, db, product):
    c = srv.client(key="unused")
    name, price = product["name"], f"${product['price']}"

    def unary():
        headers, r = ask(c, f"How much do you charge for the {name}?")
        expect(r.choices[0].message.content.startswith(f"The {name} costs $"), r)
        expect(headers.get("x-aisle-tools") == "get_product", dict(headers))
        tools = r.model_extra["aisle_tools"]
        expect([x["name"] for x in tools["calls"]] == ["get_product"], tools)
        expect(tools["rounds"][1]["cached_tokens"] > tools["rounds"][0]["cached_tokens"], tools)
    base.check("grounded: unary answer from one get_product call, prefix cache reused", unary)

    def streamed():
        chunks = list(c.chat.completions.create(
            model="shop", temperature=0, stream=True,
            messages=[{"role": "user", "content": f"How much do you charge for the {name}?"}]))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        _, r = ask(c, f"How much do you charge for the {name}?")
        expect(text == r.choices[0].message.content, (text, r))
        finish = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        expect(finish and finish[0].model_extra["aisle_tools"]["calls"][0]["name"] == "get_product", finish)
    base.check("grounded: streamed answer equals the unary one", streamed)

    def edit():
        def read(r):
            return json.loads(r.model_extra["aisle_tools"]["calls"][0]["result"])
        _, r = ask(c, f"How much do you charge for the {name}?")
        expect(read(r)["price"] == price, r)
        subprocess.run([base.BIN, "catalog", "set", db, name, "price", "99.00"], check=True, capture_output=True)
        stock = "false" if product["in_stock"] else "true"
        subprocess.run([base.BIN, "catalog", "set", db, name, "in_stock", stock], check=True, capture_output=True)
        _, r = ask(c, f"How much do you charge for the {name}?")
        expect(read(r) == {"name": name, "price": "$99.00"}, r)
        expect(r.choices[0].message.content.startswith(f"The {name} costs $"), r)
        _, r = ask(c, f"Is the {name} in stock?")
        expect(read(r)["stock"] == ("in stock" if stock == "true" else "out of stock"), r)
    base.check("grounded: an edit to the running server's catalog is what the next call reads", edit)


def main():
    tmp = tempfile.mkdtemp()
    db = os.path.join(tmp, "shop.db")
    subprocess.run([base.BIN, "catalog", "build", CATALOG, "--out", db], check=True, capture_output=True)
    product = json.load(open(CATALOG))["products"][4]
    srv = base.Server("--catalog", db, model=MODEL, key=None)
    try:
        checks(srv, db, product)
    finally:
        srv.stop()
    base.finish("e2e grounded")


if __name__ == "__main__":
    main()
