"""Talks to uag's Wyoming server with the `wyoming` package (the client library Home Assistant
uses) and prints one JSON object with what it got. Usage: wyoming_check.py HOST PORT."""

import asyncio
import json
import sys

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice


async def next_event(client):
    event = await asyncio.wait_for(client.read_event(), timeout=120)
    if event is None:
        raise SystemExit("the server closed the connection")
    return event


async def synthesize_audio(client):
    """Collects audio-start .. audio-stop; returns (rate, pcm bytes, number of audio-starts)."""
    rate, pcm, starts = None, b"", 0
    while True:
        event = await next_event(client)
        if AudioStart.is_type(event.type):
            starts += 1
            rate = AudioStart.from_event(event).rate
        elif AudioChunk.is_type(event.type):
            pcm += AudioChunk.from_event(event).audio
        elif AudioStop.is_type(event.type):
            return rate, pcm, starts
        elif Error.is_type(event.type):
            raise SystemExit(f"error: {Error.from_event(event).text}")


async def main(host, port):
    out = {}
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await next_event(client))
        out["asr_models"] = [m.name for p in info.asr for m in p.models]
        out["asr_languages"] = sorted({lang for p in info.asr for m in p.models for lang in m.languages})
        out["voices"] = [v.name for p in info.tts for v in p.voices]
        out["tts_streaming"] = any(p.supports_synthesize_streaming for p in info.tts)
        out["handle"] = [p.name for p in info.handle]

        # Text to speech, as Home Assistant's Piper integration asks for it.
        await client.write_event(Synthesize(text="When does the greenhouse open the roof vents?", voice=SynthesizeVoice(language="en")).event())
        rate, pcm, _ = await synthesize_audio(client)
        out["tts_rate"], out["tts_seconds"] = rate, len(pcm) / 2 / rate

        # That speech back through speech recognition, in 1024-sample chunks.
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        for i in range(0, len(pcm), 2048):
            await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i : i + 2048]).event())
        await client.write_event(AudioStop().event())
        event = await next_event(client)
        out["transcript"] = Transcript.from_event(event).text if Transcript.is_type(event.type) else f"{event.type}: {event.data}"

        # A question to the knowledge-base assistant (the handle program).
        await client.write_event(Transcript(text="When does the greenhouse water the tomatoes?").event())
        event = await next_event(client)
        if Handled.is_type(event.type):
            out["handled"] = Handled.from_event(event).text
        elif NotHandled.is_type(event.type):
            out["not_handled"] = NotHandled.from_event(event).text

        # Streamed synthesis: text arrives in pieces, one audio stream comes back, then stopped.
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(language="en")).event())
        for piece in ["The greenhouse opens ", "the roof vents. It waters ", "the tomatoes at six."]:
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(SynthesizeStop().event())
        _, pcm, starts = await synthesize_audio(client)
        out["stream_seconds"], out["stream_audio_starts"] = len(pcm) / 2 / rate, starts
        out["stream_stopped"] = SynthesizeStopped.is_type((await next_event(client)).type)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
