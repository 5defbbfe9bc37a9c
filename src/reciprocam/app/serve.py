"""Serving the page: on 127.0.0.1 unless told otherwise, without analytics or share links."""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
import torch

from .page import build_app

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_UPLOAD = "64mb"
"""Larger uploads are refused by the server; `load_image` guards what it reads."""


def launch(
    *,
    model: str | None,
    checkpoint: Path | None,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> None:
    """Load `model` once (default: the offline demo model), serve the page on host:port (None:
    the first free port from 7860) and block until interrupted."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    app = build_app(model, checkpoint=checkpoint, device=device)
    url = serve(app, host, port)
    print(binding_message(url, host), flush=True)
    app.block_thread()


def serve(app: gr.Blocks, host: str, port: int | None) -> str:
    """Start `app` on host:port in the background and return its local URL."""
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,
        share=False,
        inbrowser=False,
        quiet=True,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        max_file_size=MAX_UPLOAD,
        footer_links=[],
    )
    return str(app.local_url)


def binding_message(url: str, host: str) -> str:
    """The line printed on start: where the page is, and who can reach it."""
    if host in LOOPBACK:
        reach = "only this machine can reach it; --host ADDRESS exposes it to the network"
    else:
        reach = f"bound to {host}: other machines on the network can reach it"
    return f"reciprocam app: serving on {url} ({reach}); press Ctrl+C to stop"
