#!/usr/bin/env python3
"""End-to-end tool calling and structured outputs with real clients, over loopback only:
the openai SDK (tools auto / required / named / parallel, streamed deltas reassembled, the
tool answer sent back, `chat.completions.parse` with a pydantic model) and LangChain
(`bind_tools`, `with_structured_output` by json_schema and by function_calling), against
`aisle serve` on tests/fixtures/hermes-tools, a tiny model trained to call tools.

Usage: e2e_tools.py AISLE_BINARY  (run by scripts/test_e2e.sh)
"""
import json
import os
import sys

sys.argv = [sys.argv[0], sys.argv[1], os.path.join(os.path.dirname(__file__), "fixtures", "hermes-tools")]
import e2e_openai as base  # noqa: E402  (shares the server harness and the result list)
from pydantic import BaseModel, Field  # noqa: E402

GOLDEN = json.load(open(os.path.join(base.MODEL, "golden.json")))
TOOLS = GOLDEN["tools"]
DRILL = [{"role": "user", "content": "What does the drill DR-750 cost?"}]
KETTLE = [{"role": "user", "content": "Price and stock of the kettle KT-180 in Zürich, please."}]


class Product(BaseModel):
    """A product and its stock (bounded fields, so even greedy decoding of this tiny model
    ends: an unbounded float could run on digit after digit)."""
    sku: str = Field(max_length=8)
    units: int = Field(ge=0, le=99)
    in_stock: bool


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def sdk_checks(srv):
    c = srv.client()
    kw = dict(model="shop", tools=TOOLS, temperature=0, max_tokens=80)

    def auto_calls_a_tool():
        r = c.chat.completions.create(messages=DRILL, **kw)
        ch = r.choices[0]
        expect(ch.finish_reason == "tool_calls", ch)
        call = ch.message.tool_calls[0]
        expect(call.type == "function" and call.id, call)
        expect((call.function.name, json.loads(call.function.arguments)) == ("get_price", {"sku": "DR-750"}), call)

    def parallel_calls_have_their_own_ids():
        calls = c.chat.completions.create(messages=KETTLE, **kw).choices[0].message.tool_calls
        expect([t.function.name for t in calls] == ["get_price", "get_stock"], calls)
        expect(len({t.id for t in calls}) == 2, calls)
        one = c.chat.completions.create(messages=KETTLE, parallel_tool_calls=False, **kw).choices[0].message
        expect(len(one.tool_calls) == 1, one)

    def required_and_named():
        r = c.chat.completions.create(messages=DRILL, tool_choice="required", **kw).choices[0]
        expect(r.finish_reason == "tool_calls" and r.message.tool_calls, r)
        named = {"type": "function", "function": {"name": "get_stock"}}
        r = c.chat.completions.create(messages=DRILL, tool_choice=named, **kw).choices[0]
        call = r.message.tool_calls[0]
        args = json.loads(call.function.arguments)
        expect(call.function.name == "get_stock" and args["store"] in ("Zürich", "Bern") and "sku" in args, call)

    def stream_reassembles_to_the_answer():
        whole = c.chat.completions.create(messages=KETTLE, **kw).choices[0]
        calls, content, finish = {}, "", None
        for chunk in c.chat.completions.create(messages=KETTLE, stream=True, **kw):
            for ch in chunk.choices:
                content += ch.delta.content or ""
                finish = ch.finish_reason or finish
                for t in ch.delta.tool_calls or []:
                    if t.index not in calls:
                        expect(t.id and t.function.name, t)
                        calls[t.index] = [t.function.name, ""]
                    calls[t.index][1] += t.function.arguments or ""
        want = [[t.function.name, t.function.arguments] for t in whole.message.tool_calls]
        expect([calls[i] for i in sorted(calls)] == want, (calls, want))
        expect(content == (whole.message.content or "") and finish == "tool_calls", (content, finish))

    def tool_answer_comes_back_as_text():
        r = c.chat.completions.create(messages=DRILL, **kw).choices[0].message
        msgs = DRILL + [r.model_dump(exclude_none=True),
                        {"role": "tool", "tool_call_id": r.tool_calls[0].id, "content": "{\"price\": 89.9}"}]
        a = c.chat.completions.create(messages=msgs, **kw).choices[0]
        expect(a.message.content == GOLDEN["conversations"][3]["content"] and not a.message.tool_calls, a)
        expect(a.finish_reason == "stop", a)

    def parse_with_pydantic():
        r = c.chat.completions.parse(model="shop", messages=DRILL, response_format=Product, max_tokens=120, temperature=1, seed=5)
        p = r.choices[0].message.parsed
        expect(isinstance(p, Product) and len(p.sku) <= 8, r)

    for name, fn in [("tools auto: the trained model calls get_price", auto_calls_a_tool),
                     ("tools: parallel calls, own ids; parallel_tool_calls false gives one", parallel_calls_have_their_own_ids),
                     ("tools: tool_choice required and named", required_and_named),
                     ("tools: streamed deltas reassemble to the non-streamed calls", stream_reassembles_to_the_answer),
                     ("tools: the tool's answer sent back gives a text answer", tool_answer_comes_back_as_text),
                     ("structured: chat.completions.parse with a pydantic model", parse_with_pydantic)]:
        base.check(name, fn)


def langchain_checks(srv):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="shop", base_url=srv.base + "/v1", api_key=base.KEY, temperature=0, max_tokens=120,
                     max_retries=0)

    def bind_tools():
        msg = llm.bind_tools(TOOLS).invoke(DRILL)
        expect([(t["name"], t["args"]) for t in msg.tool_calls] == [("get_price", {"sku": "DR-750"})], msg)

    def structured_json_schema():
        p = llm.with_structured_output(Product, method="json_schema").invoke(DRILL)
        expect(isinstance(p, Product), p)

    def structured_function_calling():
        p = llm.with_structured_output(Product, method="function_calling").invoke(DRILL)
        expect(isinstance(p, Product), p)

    base.check("langchain: bind_tools gives tool_calls", bind_tools)
    base.check("langchain: with_structured_output(json_schema)", structured_json_schema)
    base.check("langchain: with_structured_output(function_calling)", structured_function_calling)


if __name__ == "__main__":
    base.run_suites("e2e tools", sdk_checks, langchain_checks)
