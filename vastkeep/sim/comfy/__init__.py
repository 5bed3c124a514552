"""The simulated ComfyUI every running instance serves.

``app.py`` is the aiohttp application (the fault gate, ``/system_stats``, ``/ws``); ``routes.py`` the
prompt routes; ``engine.py`` one ComfyUI process (queue, history, worker, websocket messages) and ``plan.py``
its pure helpers; ``host.py`` the processes per instance and the faults that kill or freeze them;
``validate.py``, ``nodes.py``, ``execute.py`` and ``png.py`` what a graph is checked against, what its nodes
do and the images they write. Only ``app.py`` and ``routes.py`` import aiohttp.
"""
