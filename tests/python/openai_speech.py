"""Drives a running omnihost's `speech` pipeline with the real `openai` client and listens to what comes back
with Silero VAD; prints a JSON report that the Rust test asserts on (so a failure shows what was heard).

Usage: openai_speech.py BASE_URL SILERO_VAD_ONNX
"""
import base64
import io
import json
import sys
import time
import wave

import numpy as np
import onnxruntime as ort
import openai
from openai import OpenAI

base_url, vad_path = sys.argv[1:3]
client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
vad = ort.InferenceSession(vad_path, providers=["CPUExecutionProvider"])
report = {}


def speech_fraction(samples: np.ndarray, rate: int) -> float:
    """The share of 32 ms frames in which Silero VAD (16 kHz, 512-sample windows plus 64 of context) hears
    speech with probability above 0.5."""
    n = int(len(samples) * 16000 / rate)
    x = np.interp(np.arange(n) * rate / 16000, np.arange(len(samples)), samples).astype(np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, 64), np.float32)
    sr = np.array(16000, np.int64)
    voiced = frames = 0
    for start in range(0, len(x) - 511, 512):
        window = x[None, start:start + 512]
        prob, state = vad.run(None, {"input": np.concatenate([context, window], axis=1), "state": state, "sr": sr})
        context = window[:, -64:]
        frames += 1
        voiced += float(prob.reshape(-1)[0]) > 0.5
    return voiced / max(frames, 1)


def parse_wav(data: bytes) -> dict:
    """Header facts through the standard `wave` module, samples taken to the end of the file (a streamed WAV's
    size fields say 0xFFFFFFFF)."""
    with wave.open(io.BytesIO(data)) as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
    assert data[36:40] == b"data", data[:44]
    pcm = data[44:]
    return {"rate": rate, "channels": channels, "width": width, "pcm": pcm}


def listen(pcm: bytes, rate: int) -> dict:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return {
        "seconds": len(samples) / rate,
        "rms": float(np.sqrt(np.mean(samples ** 2))) if len(samples) else 0.0,
        "vad": speech_fraction(samples, rate) if len(samples) else 0.0,
    }


def refused(call) -> dict:
    try:
        call()
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        body = body.get("error", body)
        return {"status": e.status_code, "param": body.get("param"), "message": body.get("message")}
    return {"status": 200}


# /v1/audio/speech: text spoken without the LLM, with OpenAI's voice names.
text = "The quick brown fox jumps over the lazy dog. Omnihost speaks every sentence as soon as it is ready."
started = time.monotonic()
wav = client.audio.speech.create(model="speech", voice="alloy", input=text, response_format="wav").content
report["speech_seconds_to_answer"] = time.monotonic() - started
head = parse_wav(wav)
report["speech"] = {k: v for k, v in head.items() if k != "pcm"} | listen(head["pcm"], head["rate"])
report["speech"]["words"] = len(text.split())
pcm = client.audio.speech.create(model="speech", voice="alloy", input=text, response_format="pcm").content
report["speech_pcm_is_the_wav_data"] = pcm == head["pcm"]
# Streamed as it is made: the body arrives in more than one piece.
with client.audio.speech.with_streaming_response.create(model="speech", voice="jm_kumo", input=text,
                                                         response_format="pcm") as response:
    pieces = [len(b) for b in response.iter_bytes() if b]
report["speech_streamed_pieces"] = len(pieces)
report["speech_refusals"] = {
    "voice": refused(lambda: client.audio.speech.create(model="speech", voice="nobody", input=text)),
    "input": refused(lambda: client.audio.speech.create(model="speech", voice="alloy", input="")),
    "response_format": refused(lambda: client.audio.speech.create(model="speech", voice="alloy", input=text,
                                                                  response_format="mp3")),
    "speed": refused(lambda: client.audio.speech.create(model="speech", voice="alloy", input=text, speed=9)),
    "model": refused(lambda: client.audio.speech.create(model="no-such-model", voice="alloy", input=text)),
}

# Chat with audio output: the text answers, the audio says the text.
question = [{"role": "user", "content": "What is the capital of France?"}]
answer = client.chat.completions.create(model="speech", messages=question, modalities=["text", "audio"],
                                        audio={"voice": "alloy", "format": "wav"}, temperature=0, max_tokens=48)
message = answer.choices[0].message
head = parse_wav(base64.b64decode(message.audio.data))
report["chat"] = {"content": message.content, "transcript": message.audio.transcript, "id": message.audio.id,
                  "finish_reason": answer.choices[0].finish_reason, "usage": answer.usage.model_dump(),
                  "rate": head["rate"], "channels": head["channels"]} | listen(head["pcm"], head["rate"])
report["chat_refusals"] = {
    "audio.voice": refused(lambda: client.chat.completions.create(
        model="speech", messages=question, modalities=["text", "audio"], audio={"voice": "nobody", "format": "wav"})),
    "audio.format": refused(lambda: client.chat.completions.create(
        model="speech", messages=question, modalities=["text", "audio"], audio={"voice": "alloy", "format": "mp3"})),
}

# Streamed: text deltas and audio chunks as they are made; the same request unstreamed gives the same audio.
long_question = [{"role": "user", "content": "Tell me about Paris, the capital of France."}]
params = dict(model="speech", messages=long_question, modalities=["text", "audio"], temperature=0, max_tokens=200)
events, text, transcript, chunks = [], "", "", []
started = time.monotonic()
for chunk in client.chat.completions.create(stream=True, audio={"voice": "alloy", "format": "pcm16"}, **params):
    for choice in chunk.choices:
        audio = choice.delta.audio  # openai's ChoiceDeltaAudio: id, data (base64), transcript, expires_at
        if choice.delta.content:
            events.append(("text", time.monotonic() - started))
            text += choice.delta.content
        if audio:
            events.append(("audio", time.monotonic() - started))
            chunks.append(base64.b64decode(audio.data))
            transcript += audio.transcript or ""
whole = client.chat.completions.create(audio={"voice": "alloy", "format": "pcm16"}, **params).choices[0].message
streamed_pcm = b"".join(chunks)
whole_pcm = base64.b64decode(whole.audio.data)
a = np.frombuffer(streamed_pcm, "<i2").astype(np.int32)
b = np.frombuffer(whole_pcm, "<i2").astype(np.int32)
report["stream"] = {
    "text": text,
    "transcript": transcript,
    "whole_text": whole.content,
    "audio_chunks": len(chunks),
    "first_audio_at": next((t for kind, t in events if kind == "audio"), None),
    "last_text_at": max((t for kind, t in events if kind == "text"), default=None),
    "end_at": events[-1][1] if events else None,
    "same_length": len(a) == len(b),
    "max_sample_difference": int(np.max(np.abs(a - b))) if len(a) == len(b) and len(a) else None,
} | listen(streamed_pcm, 24000)
print(json.dumps(report))
