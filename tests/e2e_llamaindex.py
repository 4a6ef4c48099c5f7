#!/usr/bin/env python3
"""End-to-end: LlamaIndex `chat_with_tools(tool_required=True)` against `aisle serve` on
tests/fixtures/hermes-tools. Runs in its own venv (LlamaIndex pins an older openai SDK than
the other e2e tests).

Usage: e2e_llamaindex.py AISLE_BINARY  (run by scripts/test_e2e.sh)
"""
import os
import sys

sys.argv = [sys.argv[0], sys.argv[1], os.path.join(os.path.dirname(__file__), "fixtures", "hermes-tools")]
import e2e_openai as base  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402
from llama_index.llms.openai_like import OpenAILike  # noqa: E402


def get_price(sku: str) -> float:
    """Price of a product in euros."""
    return 89.9


def get_stock(sku: str, store: str) -> int:
    """Units of a product in a store."""
    return 3


def llamaindex_checks(srv):
    llm = OpenAILike(model="shop", api_base=srv.base + "/v1", api_key=base.KEY, is_chat_model=True,
                     is_function_calling_model=True, temperature=0, max_tokens=120, max_retries=0)
    tools = [FunctionTool.from_defaults(fn=get_price), FunctionTool.from_defaults(fn=get_stock)]

    def required_call():
        resp = llm.chat_with_tools(tools, user_msg="What does the drill DR-750 cost?", tool_required=True)
        calls = llm.get_tool_calls_from_response(resp, error_on_no_tool_call=True)
        names = {c.tool_name for c in calls}
        if not names <= {"get_price", "get_stock"} or not all("sku" in c.tool_kwargs for c in calls):
            raise AssertionError(calls)

    base.check("llamaindex: chat_with_tools(tool_required=True) gets tool calls", required_call)


if __name__ == "__main__":
    base.run_suites("e2e llamaindex", llamaindex_checks)
