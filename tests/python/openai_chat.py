"""Drives a running omnihost's chat model with the real `openai` client; prints a JSON report of what it saw.

Usage: openai_chat.py BASE_URL MODEL
The Rust test asserts on the report, so a failure shows the actual texts.
"""
import json
import sys

from openai import OpenAI

base_url, model = sys.argv[1:3]
client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)
question = [{"role": "user", "content": "What is the capital of France?"}]
report = {}


def streamed(**kwargs):
    text, finish, usage = "", None, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish, usage


greedy = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=32)
report["greedy"] = greedy.choices[0].message.content
report["greedy_finish"] = greedy.choices[0].finish_reason
text, finish, usage = streamed(model=model, messages=question, temperature=0, max_tokens=32,
                               stream_options={"include_usage": True})
report["greedy_streamed"] = text
report["greedy_streamed_finish"] = finish
report["streamed_usage"] = usage
report["greedy_usage"] = greedy.usage.model_dump()

story = [{"role": "user", "content": "Write a short story about a cat."}]
sampled = lambda seed: client.chat.completions.create(model=model, messages=story, temperature=0.8, seed=seed,
                                                      max_tokens=24).choices[0].message.content
report["seed_7_a"] = sampled(7)
report["seed_7_b"] = sampled(7)
report["seed_8"] = sampled(8)

# A stop string the greedy answer is known to contain.
stopped = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=32, stop=["Paris"])
report["stopped"] = stopped.choices[0].message.content
report["stopped_finish"] = stopped.choices[0].finish_reason
text, finish, _ = streamed(model=model, messages=question, temperature=0, max_tokens=32, stop=["Paris"])
report["stopped_streamed"] = text
report["stopped_streamed_finish"] = finish

short = client.chat.completions.create(model=model, messages=story, temperature=0, max_tokens=5)
report["short_finish"] = short.choices[0].finish_reason
report["short_usage"] = short.usage.model_dump()

two = client.chat.completions.create(model=model, messages=story, temperature=0.8, seed=3, n=2, max_tokens=12)
report["n2"] = [c.message.content for c in two.choices]
report["n2_usage"] = two.usage.model_dump()

lp = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=4, logprobs=True,
                                    top_logprobs=3)
report["logprobs"] = [{"token": t.token, "logprob": t.logprob, "top": [a.token for a in t.top_logprobs]}
                      for t in lp.choices[0].logprobs.content]

completion = client.completions.create(model=model, prompt="The capital of France is", temperature=0, max_tokens=8)
report["completion"] = completion.choices[0].text
report["completion_finish"] = completion.choices[0].finish_reason

print(json.dumps(report))
