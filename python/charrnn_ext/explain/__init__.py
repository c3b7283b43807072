"""Look inside a model: the per-character trace of a text as a page.

:func:`build_payload` traces a text (:meth:`CharRNN.trace
<charrnn_ext.model.CharRNN.trace>`) and gathers what the page shows into one
JSON-serialisable dict (schema in :mod:`.payload`): the surprisal of every
character and the top predictions, every shown unit's activations, and the
units that best track simple features of the text (:mod:`.features`).
:func:`write_explain` writes it as a self-contained HTML page or as JSON
(:mod:`.page`); ``charrnn explain`` is the command line of both.
"""

from .features import FEATURES, correlations, feature_series, rank_units
from .page import FORMATS, asset, page_html, payload_json, write_explain
from .payload import MAX_CHARS, SCHEMA, build_payload, model_info, payload_from_trace

__all__ = [
    "FEATURES",
    "FORMATS",
    "MAX_CHARS",
    "SCHEMA",
    "asset",
    "build_payload",
    "correlations",
    "feature_series",
    "model_info",
    "page_html",
    "payload_from_trace",
    "payload_json",
    "rank_units",
    "write_explain",
]
