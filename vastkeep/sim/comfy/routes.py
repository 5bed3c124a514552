"""ComfyUI's prompt routes as its ``server.py`` answers them (also under ``/api``): ``/prompt``, ``/queue``,
``/history``, ``/interrupt``, ``/view``, ``/upload/image``, ``/object_info``.

Each request reaches the instance's one ComfyUI process (``request["sim_instance"]``, set by the gate in
``app.py``); the process does the work (``engine.py``), these handlers only parse and answer.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web

from vastkeep.sim.comfy.engine import ComfyProcess
from vastkeep.sim.comfy.host import ComfyHost
from vastkeep.sim.comfy.nodes import object_info

#: aiohttp's own answer to a handler that raised, which is what ComfyUI gives a body that is not JSON.
SERVER_ERROR = "500 Internal Server Error\n\nServer got itself in trouble"
UNSAFE_TYPES = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}


class PromptRoutes:
    """ComfyUI's prompt handlers, one method each, on the instance the gate chose for the request."""

    def __init__(self, host: Callable[[], ComfyHost | None]) -> None:
        self.host = host

    def proc_of(self, request: web.Request) -> ComfyProcess:
        h = self.host()
        assert h is not None
        return h.process(request["sim_instance"])

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.proc_of(request).queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await _body_of(request)
        if body is None:
            return web.Response(status=500, text=SERVER_ERROR)
        status, answer = self.proc_of(request).submit(body)
        return web.json_response(answer, status=status)

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(self.proc_of(request).current_queue())

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await _body_of(request)
        if body is None:
            return web.Response(status=500, text=SERVER_ERROR)
        proc = self.proc_of(request)
        if body.get("clear"):
            proc.clear_pending()
        if "delete" in body:
            proc.delete_pending(list(body["delete"]))
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        body = await _body_of(request) if request.can_read_body else {}
        self.proc_of(request).interrupt((body or {}).get("prompt_id"))
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        max_items = int(q["max_items"]) if "max_items" in q else None
        offset = int(q.get("offset", -1))
        return web.json_response(self.proc_of(request).get_history(max_items=max_items, offset=offset))

    async def get_history_item(self, request: web.Request) -> web.Response:
        return web.json_response(self.proc_of(request).get_history(request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        body = await _body_of(request)
        if body is None:
            return web.Response(status=500, text=SERVER_ERROR)
        proc = self.proc_of(request)
        if body.get("clear"):
            proc.history.clear()
        for pid in body.get("delete", []):
            proc.history.pop(pid, None)
        return web.Response(status=200)

    async def view(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        if "filename" not in q:
            return web.Response(status=404)
        dirs = self.proc_of(request).dirs
        filename, kind = q["filename"], None
        for tag in ("output", "input", "temp"):  # an annotated name: "x.png [input]"
            if filename.endswith(f" [{tag}]"):
                filename, kind = filename[: -len(tag) - 3], tag
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        wanted = kind or q.get("type", "output")
        base = dirs.of(wanted) if wanted is not None else None
        if base is None:
            return web.Response(status=400)
        folder = str(base)
        if "subfolder" in q:
            full = os.path.join(folder, q["subfolder"])
            if os.path.commonpath((os.path.abspath(full), folder)) != folder:
                return web.Response(status=403)
            folder = full
        name = os.path.basename(filename)
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return web.Response(status=404)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype in UNSAFE_TYPES:
            ctype = "application/octet-stream"
        return web.FileResponse(
            path, headers={"Content-Disposition": f'filename="{name}"', "Content-Type": ctype}
        )

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        kind = str(post.get("type") or "input")
        dirs = self.proc_of(request).dirs
        base = dirs.of(kind if kind in ("input", "temp", "output") else "input")
        if base is None or not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        folder = os.path.join(str(base), os.path.normpath(subfolder))
        filename = image.filename
        path = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((str(base), path)) != str(base):
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        data = image.file.read()
        if str(post.get("overwrite")) not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            i = 1
            while os.path.exists(path):
                with open(path, "rb") as fh:
                    if fh.read() == data:  # the same image again: ComfyUI keeps the one it has
                        break
                filename = f"{stem} ({i}){ext}"
                path = os.path.join(folder, filename)
                i += 1
        with open(path, "wb") as fh:
            fh.write(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def get_object_info(self, request: web.Request) -> web.Response:
        files = self.proc_of(request).dirs.input_files()
        return web.json_response(object_info(files, request.match_info.get("node_class")))


async def _body_of(request: web.Request) -> dict[str, Any] | None:
    try:
        data = await request.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


#: (method, path under ``/`` and ``/api``, handler): ComfyUI's ``server.py`` routes this stand-in answers.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/prompt", "get_prompt"),
    ("POST", "/prompt", "post_prompt"),
    ("GET", "/queue", "get_queue"),
    ("POST", "/queue", "post_queue"),
    ("POST", "/interrupt", "post_interrupt"),
    ("GET", "/history", "get_history"),
    ("GET", "/history/{prompt_id}", "get_history_item"),
    ("POST", "/history", "post_history"),
    ("GET", "/view", "view"),
    ("POST", "/upload/image", "upload_image"),
    ("GET", "/object_info", "get_object_info"),
    ("GET", "/object_info/{node_class}", "get_object_info"),
)


def add_routes(app: web.Application, host: Callable[[], ComfyHost | None]) -> None:
    """Register the prompt routes at ``/`` and ``/api`` on ComfyUI's application."""
    handlers = PromptRoutes(host)
    for prefix in ("", "/api"):
        for method, path, name in ROUTES:
            if method == "GET":
                app.router.add_get(prefix + path, getattr(handlers, name))  # HEAD too, as before
            else:
                app.router.add_post(prefix + path, getattr(handlers, name))
