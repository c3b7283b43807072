"""``charrnn serve``: a local web page to pick a model, sample from it and
watch the text arrive as it is drawn, and explain a text with it.

Needs the ``serve`` extra (Starlette on uvicorn): ``pip install
'charrnn_ext[serve]'``. The modules: :mod:`.registry` (the models found under
PATH, loaded once), :mod:`.params` (requests checked against the option
table of the command line), :mod:`.limits` (slots for streams in progress),
:mod:`.streaming` (sampled text as server-sent events), :mod:`.trace` (the
seam to the explain view), :mod:`.app` (the routes), :mod:`.run` (the
server) and :mod:`.process` (a server as a child process). The page's assets are in ``static/``; nothing is loaded
from anywhere else.
"""
