"""Run inside a network namespace with no interfaces but loopback (see test_cli_offline.py): proves the
engine loads and holds a spoken turn without any network. Prints one JSON line with what happened."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import socket
import subprocess
import sys


def network_is_gone() -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(("192.0.2.1", 80))  # TEST-NET-1: unreachable everywhere, instantly so without routes
    except OSError as exc:
        return exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)
    finally:
        s.close()
    return False


def caller_audio() -> bytes:
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", "what are your opening hours"],
        capture_output=True,
        check=True,
    ).stdout
    ulaw = subprocess.run(
        ["sox", "-D", "-t", "wav", "-", "-r", "8000", "-e", "u-law", "-t", "raw", "-"],
        input=wav,
        capture_output=True,
        check=True,
    ).stdout
    return b"\xff" * 1600 + ulaw + b"\xff" * 8000


async def main(audio: bytes) -> dict:
    from openai import AsyncOpenAI

    from gateway.engine.server import serve
    from gateway.engine.settings import EngineSettings

    ready = asyncio.Event()
    port = int(sys.argv[1])
    server = asyncio.create_task(serve(EngineSettings(host="127.0.0.1", port=port, pace=0), ready))
    await asyncio.wait_for(ready.wait(), 60)
    client = AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{port}/v1", max_retries=0)
    result: dict = {"network_gone": network_is_gone()}
    async with client.realtime.connect(model="gpt-realtime", extra_query={"profile": "front-desk"}) as conn:
        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"format": {"type": "audio/pcmu"}},
                },
            }
        )
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio).decode())
        audio_bytes = 0
        async for event in conn:
            if event.type == "conversation.item.input_audio_transcription.completed":
                result["heard"] = event.transcript
            elif event.type == "response.output_audio.delta":
                audio_bytes += len(base64.b64decode(event.delta))
            elif event.type == "response.done":
                result["reply"] = event.response.output[0].content[0].transcript
                result["reply_audio_bytes"] = audio_bytes
                break
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(caller_audio()))))
