"""``adasr serve``: live streaming sessions over the network (docs/SERVING.md).

:func:`create_app` (:mod:`adasr.serve.app`) builds the FastAPI app over a loaded engine;
:mod:`adasr.serve.wire` holds the protocol (frames, events, limits, close codes) and needs only
pydantic, so clients import it without the server's dependencies; :mod:`adasr.serve.worker` is
the engine thread. The server needs the ``serve`` extra (fastapi, uvicorn, prometheus-client).
"""

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from adasr.serve.app import create_app

        return create_app
    raise AttributeError(name)
