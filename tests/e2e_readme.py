#!/usr/bin/env python3
"""The README's examples, run as written against the quick-start server (`aisle serve` with
no --model: the shipped shop model, no API key), so the docs cannot drift: every ```python
block in order in one namespace (each must run and print), and every ```bash block that is a
`curl` call, whose `# →` comment must show the answer the server really gives. Only the port
differs from the README.

Usage: e2e_readme.py AISLE_BINARY  (run by scripts/test_e2e.sh)
"""
import contextlib
import io
import json
import os
import re
import subprocess
import sys

sys.argv = [sys.argv[0], sys.argv[1], ""]
import e2e_openai as base  # noqa: E402  (shares the server harness and the result list)

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


def blocks(lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", open(README, encoding="utf-8").read(), re.S | re.M)


def main():
    srv = base.Server(model=None, key=None)
    local = lambda code: code.replace("127.0.0.1:8080", f"127.0.0.1:{srv.port}")  # noqa: E731
    try:
        namespace = {}
        python = blocks("python")
        assert python, "the README has python examples"
        for i, code in enumerate(python):
            def run(code=code, i=i):
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    exec(compile(local(code), f"README python block {i + 1}", "exec"), namespace)
                assert out.getvalue().strip(), "the example printed nothing"
                print(out.getvalue().rstrip())
            base.check(f"readme: python block {i + 1} of {len(python)} runs", run)
        curls = [b for b in blocks("bash") if b.lstrip().startswith("curl ")]
        assert curls, "the README has curl examples"
        for i, block in enumerate(curls):
            def run(block=block):
                out = subprocess.run(["bash", "-c", local(block)], capture_output=True, text=True, timeout=120)
                assert out.returncode == 0, out.stderr
                body = json.loads(out.stdout)
                shown = re.findall(r'"content":"([^"]*)"', block)
                if shown:
                    assert body["choices"][0]["message"]["content"] == shown[0], (body, shown)
            base.check(f"readme: curl example {i + 1} answers as shown", run)
    finally:
        srv.stop()
    base.finish("e2e readme")


if __name__ == "__main__":
    main()
