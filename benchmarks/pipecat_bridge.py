"""The Pipecat side of `benchmarks/model_link.py --pipecat`: the Twilio bridge most Python users would write
with Pipecat 1.14 (https://docs.pipecat.ai), run as its own process in the benchmark-only `.venv-bench`.

    make bench-deps        # .venv-bench with benchmarks/requirements-pipecat.txt
    .venv-bench/bin/python benchmarks/pipecat_bridge.py HOST PORT MODEL_URL TWILIO_AUTH_TOKEN

FastAPI/uvicorn WebSocket endpoint `/twilio/stream` (the gateway's path) -> the Twilio upgrade's
X-Twilio-Signature checked with Twilio's own `RequestValidator` (as the gateway does: like with like) ->
`parse_telephony_websocket` reads `connected` + `start` -> `FastAPIWebsocketTransport` with
`TwilioFrameSerializer` (mu-law 8 kHz <-> PCM) -> `LLMContextAggregatorPair` -> `OpenAIRealtimeLLMService`
with `base_url` at the local fake Realtime server (server-side turn detection, as Pipecat's
examples/realtime/realtime-openai.py) -> transport output; an `LLMRunFrame` on connect (the greeting, as the
gateway's greeting `response.create`). The pipeline runs at 8 kHz in and out, as Pipecat's Twilio
examples set it; the Realtime service itself always speaks 24 kHz PCM16 to the model and resamples.
Logging at WARNING (the gateway runs at WARNING in the benchmark); uvloop as the event loop (the
gateway's too). `auto_hang_up` is off: no Twilio REST call at the end (the gateway makes none either).
Nothing here is imported by the gateway; Pipecat is never a runtime or test dependency.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from twilio.request_validator import RequestValidator


def build_app(model_url: str, auth_token: str) -> FastAPI:
    app = FastAPI()
    validator = RequestValidator(auth_token)

    @app.websocket("/twilio/stream")
    async def twilio_stream(websocket: WebSocket) -> None:
        url = f"ws://{websocket.headers.get('host', '')}{websocket.url.path}"
        if not validator.validate(url, {}, websocket.headers.get("x-twilio-signature", "")):
            await websocket.close(code=1008)
            return
        await websocket.accept()
        _, call = await parse_telephony_websocket(websocket)
        serializer = TwilioFrameSerializer(
            stream_sid=call["stream_id"], call_sid=call["call_id"],
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
        transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer))
        llm = OpenAIRealtimeLLMService(
            api_key="bench", base_url=model_url,
            settings=OpenAIRealtimeLLMService.Settings(system_instruction="You are a helpful phone agent."))
        context = LLMContext([{"role": "developer", "content": "Say hello!"}])
        user, assistant = LLMContextAggregatorPair(context)  # realtime mode auto-detected from the service
        pipeline = Pipeline([transport.input(), user, llm, transport.output(), assistant])
        worker = PipelineWorker(pipeline, params=PipelineParams(audio_in_sample_rate=8000,
                                                                audio_out_sample_rate=8000))

        @transport.event_handler("on_client_connected")
        async def on_connected(transport, client) -> None:  # type: ignore[no-untyped-def]
            await worker.queue_frames([LLMRunFrame()])

        @transport.event_handler("on_client_disconnected")
        async def on_disconnected(transport, client) -> None:  # type: ignore[no-untyped-def]
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    return app


def main() -> int:
    host, port, model_url, auth_token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    uvicorn.run(build_app(model_url, auth_token), host=host, port=port, loop="uvloop", log_level="warning",
                ws_max_size=65536, ws_per_message_deflate=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
