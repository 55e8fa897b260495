"""The official openai SDK's Realtime clients against uag's /v1/realtime (tests/it/voice.rs).

Usage: realtime_sdk_check.py BASE_URL QUESTION.pcm (16-bit mono PCM at 24 kHz)

1. The current client (`client.realtime.connect`), push-to-talk (`turn_detection: None`): the
   question is appended in 100 ms chunks, committed, and `response.create` asks for the answer;
   the transcription, transcript deltas, pcm16 audio deltas and `response.done` must arrive.
2. The same client with server VAD: silence, the question, silence, and no commit: the server
   ends the utterance itself and answers.
3. The beta client (`client.beta.realtime.connect`, `OpenAI-Beta: realtime=v1`), text only: a
   typed question (`conversation.item.create` + `response.create`) is answered with
   `response.text.delta` events.
Prints "sdk check passed" when every assertion holds.
"""

import base64
import sys
import time

from openai import OpenAI

base, pcm_path = sys.argv[1], sys.argv[2]
question = open(pcm_path, "rb").read()
client = OpenAI(base_url=base.rstrip("/") + "/v1", api_key="not-checked-here")
CHUNK = 4800  # 100 ms at 24 kHz, 16-bit


def collect(conn, until="response.done", limit_s=120):
    """Events up to and including the first `until`."""
    seen = []
    deadline = time.time() + limit_s
    for event in conn:
        seen.append(event)
        if event.type == "error":
            raise AssertionError(f"server error: {event.error}")
        if event.type == until:
            return seen
        if time.time() > deadline:
            break
    raise AssertionError(f"no {until} within {limit_s} s; got {[e.type for e in seen]}")


def append(conn, pcm):
    for i in range(0, len(pcm), CHUNK):
        conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + CHUNK]).decode())


def check_spoken_answer(events, label):
    types = [e.type for e in events]
    transcripts = [e.transcript for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert transcripts, f"{label}: no transcription in {types}"
    heard = transcripts[0].lower()
    # whisper tiny.en may hear "vents" as "fence"; the rest of the question is stable.
    assert "greenhouse" in heard and "roof" in heard, f"{label}: heard {heard!r}"
    for kind in ["input_audio_buffer.committed", "response.created", "response.output_item.added", "response.content_part.added"]:
        assert kind in types, f"{label}: no {kind} in {types}"
    answer = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    assert answer.strip(), f"{label}: no transcript deltas in {types}"
    audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    assert len(audio) > 24000 * 2 // 2, f"{label}: only {len(audio)} bytes of pcm16 audio"
    assert len(audio) % 2 == 0
    done = events[-1]
    assert done.response.status == "completed", f"{label}: {done.response.status}"
    transcript_done = [e.transcript for e in events if e.type == "response.output_audio_transcript.done"]
    assert transcript_done == [answer], f"{label}: {transcript_done!r} vs {answer!r}"
    assert types.index("response.created") > types.index("conversation.item.input_audio_transcription.completed")
    print(f"{label}: heard {heard!r}; answer {answer!r}; {len(audio) / 48000:.1f} s of audio")


with client.realtime.connect(model="gpt-realtime") as conn:
    created = conn.recv()
    assert created.type == "session.created", created.type
    conn.session.update(
        session={
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
            },
        }
    )
    updated = conn.recv()
    assert updated.type == "session.updated", updated.type
    assert updated.session.audio.input.turn_detection is None, updated.session
    append(conn, question)
    conn.input_audio_buffer.commit()
    conn.response.create()
    events = collect(conn)
    assert "input_audio_buffer.speech_stopped" not in [e.type for e in events], "push-to-talk is not endpointed by the server"
    check_spoken_answer(events, "push-to-talk")

with client.realtime.connect(model="gpt-realtime") as conn:
    assert conn.recv().type == "session.created"
    conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
    assert conn.recv().type == "session.updated"
    silence = bytes(24000 * 2 * 3 // 10)
    append(conn, silence + question + bytes(24000 * 2 * 3 // 2))
    events = collect(conn)
    types = [e.type for e in events]
    assert "input_audio_buffer.speech_started" in types and "input_audio_buffer.speech_stopped" in types, types
    check_spoken_answer(events, "server VAD")

# The beta client always dials wss:// from base_url; a plain-HTTP gateway is named with
# websocket_base_url, as a LAN client of the appliance would.
ws_base = base.rstrip("/").replace("http://", "ws://", 1) + "/v1"
beta_client = OpenAI(base_url=base.rstrip("/") + "/v1", websocket_base_url=ws_base, api_key="not-checked-here")
with beta_client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
    assert conn.recv().type == "session.created"
    conn.session.update(session={"modalities": ["text"]})
    assert conn.recv().type == "session.updated"
    conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "When does the greenhouse open the roof vents?"}]}
    )
    conn.response.create()
    events = collect(conn)
    types = [e.type for e in events]
    assert "conversation.item.created" in types, types
    text = "".join(e.delta for e in events if e.type == "response.text.delta")
    assert text.strip(), f"beta text: no response.text.delta in {types}"
    assert not any(t.startswith("response.audio") for t in types), types
    assert events[-1].response.status == "completed"
    print(f"beta text: answer {text!r}")

print("sdk check passed")
