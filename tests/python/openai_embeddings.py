"""Drives a running omnihost with the real `openai` client; exits non-zero on any mismatch.

Usage: openai_embeddings.py BASE_URL API_KEY MODEL
"""
import base64
import json
import math
import struct
import sys

import openai
from openai import OpenAI

base_url, key, model = sys.argv[1:4]
texts = ["A man is eating food.", "A man is eating a piece of bread."]
client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)

as_float = client.embeddings.create(model=model, input=texts, encoding_format="float")
floats = [d.embedding for d in as_float.data]

as_base64 = client.embeddings.create(model=model, input=texts, encoding_format="base64")
decoded = []
for d in as_base64.data:
    raw = base64.b64decode(d.embedding)
    decoded.append(list(struct.unpack(f"<{len(raw) // 4}f", raw)))

# Without encoding_format the SDK asks for base64 and decodes it itself.
default = [d.embedding for d in client.embeddings.create(model=model, input=texts).data]

for a, b, c in zip(floats, decoded, default):
    assert len(a) == len(b) == len(c) == 384, (len(a), len(b), len(c))
    assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-6
    assert max(abs(x - y) for x, y in zip(a, c)) <= 1e-6
similarity = sum(x * y for x, y in zip(floats[0], floats[1]))
assert abs(similarity - 0.754) <= 0.01, similarity
assert as_float.usage.prompt_tokens > 0
assert math.isclose(sum(x * x for x in floats[0]), 1.0, rel_tol=1e-4)

try:
    client.embeddings.create(model="no-such-model", input="hi")
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    not_found = e.status_code

try:
    OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0).embeddings.create(model=model, input="hi")
    raise AssertionError("bad key accepted")
except openai.AuthenticationError as e:
    unauthorized = e.status_code

print(json.dumps({"similarity": similarity, "not_found": not_found, "unauthorized": unauthorized}))
