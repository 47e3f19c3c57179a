"""``serve``: run the chat server in the foreground (uvicorn), on the caller's runtime."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from hwkit.log import get_logger
from hwkit.plugins.serving.config import ServeConfig, check_bind

if TYPE_CHECKING:
    from hwkit.runtime import Runtime

log = get_logger(__name__)

PURPOSE = "hwkit serve"
SWITCH_INTERVAL = 0.0001  # seconds (Python default 0.005); measured: bench/serve_throughput.py


def serve(config: ServeConfig, runtime: Runtime) -> None:
    """Check the bind address and the ``serve`` extra, then serve until interrupted."""
    from hwkit.extras import require

    check_bind(config)
    for module in ("fastapi", "anyio", "uvicorn"):
        require(module, purpose=PURPOSE)
    import uvicorn

    from hwkit.plugins.serving.routes import create_app

    # Decoding threads (llama.cpp, GenAI, torch) hand text to the event loop per token; a
    # shorter GIL switch interval than 5 ms keeps each hand-over from waiting out a slice.
    sys.setswitchinterval(SWITCH_INTERVAL)
    app = create_app(config, runtime)
    log.info(
        "serve.start",
        host=config.host,
        port=config.port,
        models=list(config.models),
        budget_mib=round(config.memory_budget / 2**20) if config.memory_budget else None,
        dtype=config.dtype or "per plan",
        auth=bool(config.token),
    )
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False)
    finally:
        app.state.hwkit.pool.close()
