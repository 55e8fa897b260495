"""Drives uag's local model endpoints with the official `openai` Python SDK, unchanged:
speech, transcription (json and verbose_json) and embeddings (the SDK asks for base64).

Usage: python openai_sdk_models_check.py BASE_URL
Exits non-zero with a message on the first mismatch; prints "sdk models check passed" at the end.
"""
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="unused-by-uag", max_retries=0, timeout=120)

speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Open the garage door.", response_format="wav")
audio = speech.read()
assert audio[:4] == b"RIFF" and len(audio) > 22050, len(audio)

text = client.audio.transcriptions.create(model="whisper-1", file=("garage.wav", audio, "audio/wav"))
words = text.text.lower()
assert "garage" in words and "door" in words, text

verbose = client.audio.transcriptions.create(model="whisper-1", file=("garage.wav", audio), response_format="verbose_json")
assert verbose.language == "en" and verbose.duration > 0.5 and verbose.segments, verbose

emb = client.embeddings.create(model="text-embedding-3-small", input=["open the garage", "open the garage door"])
a, b = emb.data[0].embedding, emb.data[1].embedding
assert len(a) == 384 and len(b) == 384, (len(a), len(b))
assert sum(x * y for x, y in zip(a, b)) > 0.7, "paraphrases should be close"
assert emb.usage.prompt_tokens > 0, emb.usage

try:
    client.audio.speech.create(model="tts-1", voice="alloy", input="", response_format="wav")
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.body["param"] == "input", e.body

# The models list names the local models by the OpenAI names used above.
ids = [m.id for m in client.models.list()]
for name in ["whisper-1", "tts-1", "text-embedding-3-small"]:
    assert name in ids, (name, ids)

print("sdk models check passed")
