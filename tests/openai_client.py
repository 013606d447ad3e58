"""A minimal HTTP client for the server tests (the standard library only): JSON posts and server-sent events."""

import base64
import http.client
import io
import json
from urllib.parse import urlsplit


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)


def request(url: str, method: str, path: str, body=None, raw: bytes | None = None, headers=None):
    """(status, parsed JSON body) of one request; ``raw`` sends bytes as they are."""
    conn = _connection(url)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        conn.close()


def post(url: str, path: str, body):
    return request(url, "POST", path, body)


def stream(url: str, path: str, body) -> tuple[int, list]:
    """(status, events): every ``data:`` event of a streamed response, parsed (the final "[DONE]" kept as is)."""
    conn = _connection(url)
    try:
        conn.request("POST", path, body=json.dumps({**body, "stream": True}).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            return response.status, [json.loads(response.read())]
        assert response.getheader("Content-Type") == "text/event-stream"
        events = []
        for block in response.read().decode().split("\n\n"):
            if block:
                assert block.startswith("data: "), block
                data = block[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
        return response.status, events
    finally:
        conn.close()


def stream_texts(events: list, key: str = "text") -> dict[int, str]:
    """choice index -> the concatenated ``text`` (completions) or ``delta[key]`` (chat) of a stream's chunks."""
    out: dict[int, str] = {}
    for e in events:
        if e == "[DONE]":
            continue
        for c in e["choices"]:
            piece = c.get("text") if "text" in c else (c["delta"].get(key) or "")
            out[c["index"]] = out.get(c["index"], "") + (piece or "")
    return out


def finish_reasons(events: list) -> dict[int, str]:
    return {c["index"]: c["finish_reason"] for e in events if e != "[DONE]" for c in e["choices"]
            if c["finish_reason"] is not None}


def png_data_url(seed: int = 0, height: int = 40, width: int = 56) -> str:
    """A random RGB picture as a base64 PNG data URL (how OpenAI clients send images)."""
    import numpy as np
    from PIL import Image

    picture = (np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
