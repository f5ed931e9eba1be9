#!/usr/bin/env python3
"""Renders tests/data/chat-templates/*.jinja with Python's Jinja2 set up as
Hugging Face transformers' apply_chat_template sets it up, writing the
expected prompts (NAME.CASE.txt) that the Rust renderer must match byte
for byte. Rerun after adding a template or a case: pip install jinja2."""

import json
import pathlib
from datetime import datetime

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

DIR = pathlib.Path(__file__).resolve().parent.parent / "tests/data/chat-templates"
SPECIAL = json.loads((DIR / "special-tokens.json").read_text())
CASES = json.loads((DIR / "cases.json").read_text())


def raise_exception(message):
    raise ValueError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda f: datetime.now().strftime(f)

for name, tokens in SPECIAL.items():
    template = env.from_string((DIR / f"{name}.jinja").read_text())
    for case, messages in CASES.items():
        text = template.render(messages=messages, tools=None, add_generation_prompt=True, **tokens)
        (DIR / f"{name}.{case}.txt").write_text(text)
        print(f"{name}.{case}.txt: {len(text)} bytes")
