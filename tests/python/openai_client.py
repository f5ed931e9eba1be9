"""The official `openai` client against a running `prima serve` (its base
URL is argv[1]): chat, streamed chat, completion, model list and errors.
Prints what it checked; exits non-zero on the first mismatch."""

import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0)
model = client.models.list().data[0].id
messages = [{"role": "user", "content": "What is the capital of France?"}]

chat = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24)
text = chat.choices[0].message.content
assert text, "empty chat completion"
assert chat.choices[0].finish_reason in ("stop", "length"), chat.choices[0].finish_reason
assert chat.usage.completion_tokens > 0 and chat.usage.prompt_tokens > 0, chat.usage

deltas, usage, finish = [], None, None
for chunk in client.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=24, stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            deltas.append(c.delta.content)
        finish = c.finish_reason or finish
streamed = "".join(deltas)
assert streamed == text, f"streamed {streamed!r} != {text!r}"
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage
assert finish == chat.choices[0].finish_reason, finish

stopped = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24, stop=[text[3:6]])
assert stopped.choices[0].message.content == text[:3], (stopped.choices[0].message.content, text)
assert stopped.choices[0].finish_reason == "stop"

completion = client.completions.create(model=model, prompt="The capital of France is", temperature=0, max_tokens=8)
assert completion.choices[0].text, "empty completion"

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    raise AssertionError("an unknown model was served")
except openai.NotFoundError:
    pass
try:
    client.chat.completions.create(model=model, messages=[])
    raise AssertionError("empty messages were accepted")
except openai.BadRequestError as e:
    assert "messages" in str(e), e

print(f"ok: chat {text!r}, {len(deltas)} stream deltas, completion {completion.choices[0].text!r}")
