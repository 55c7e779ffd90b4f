"""``alexnet serve``: an inference server for checkpoints and exported .onnx files (docs/SERVING.md).

It speaks the Open Inference Protocol (KServe's v2, as Triton and KServe servers do) over HTTP/REST,
with Triton's binary tensor data and classification extensions, so a client written for those
servers works unchanged; batches the requests that arrive close together (Triton's dynamic
batching: a maximum batch and a maximum delay, a bounded queue, a per-request timeout); and exports
Prometheus metrics. The parts, bottom to top: :mod:`.repository` (the MODEL arguments → loaded
models, Triton's NAME/VERSION/FILE layout), :mod:`.metrics`, :mod:`.batcher`, :mod:`.protocol`
(request and response bodies) and :mod:`.app` (the routes). Every probability goes through
:func:`alexnet.inference.evaluate.input_probabilities`, the second half of the one inference path,
after the model's own preprocessing: an answer equals ``alexnet predict``'s.
"""

from __future__ import annotations

from alexnet.tools.explore import SERVER_MODULES, require_server

SERVE_MODULES = {**SERVER_MODULES, "prometheus_client": "prometheus-client"}


def require() -> None:
    """One line naming the pip command when a package of the ``[serve]`` extra is missing."""
    require_server("serve", SERVE_MODULES)
