#!/usr/bin/env python3
"""A tiny interactive WebSocket client for trying a chat node by hand.

Every line you type is sent as one JSON frame; every frame the server sends is
printed on its own line. `$CONV` in a typed line stands for the id of the last
conversation the server told you about, so example lines can be pasted as-is. Needs the `websockets` package
(apt-get install -y python3-websockets, or pip install websockets).

    scripts/chat-client.py ws://127.0.0.1:8080/v1/ws ACCESS_TOKEN
"""
import asyncio
import json
import sys

import websockets


async def main(url: str, token: str) -> None:
    sep = "&" if "?" in url else "?"
    async with websockets.connect(
        f"{url}{sep}access_token={token}", subprotocols=["chat.v1.json"]
    ) as ws:
        loop = asyncio.get_running_loop()

        last = {"conv": ""}

        async def printer() -> None:
            async for frame in ws:
                print("<", frame, flush=True)
                try:
                    conv = json.loads(frame).get("conversation")
                except (ValueError, AttributeError):
                    continue
                if isinstance(conv, dict):
                    last["conv"] = conv.get("id", last["conv"])
                elif isinstance(conv, str):
                    last["conv"] = conv

        task = asyncio.create_task(printer())
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            line = line.strip()
            if line:
                await ws.send(line.replace("$CONV", last["conv"]))
        task.cancel()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    except KeyboardInterrupt:
        pass
