"""``alexnet explore``: a local web page over one checkpoint, to look inside the network.

The views (docs/EXPLORE.md): Classify (top-5 of an upload or a data-set image, the crop the
network saw, §4.1's ten views), Layers (every layer's maps for that image, the two towers of §3.2
side by side), Filters (conv1's kernels, Fig. 3), Why (Grad-CAM on the last conv layer and Zeiler &
Fergus's occlusion sensitivity), Units (a channel's top 9 patches cut to its receptive field and
its feature visualisation, :mod:`.units`), Neighbours (the training images nearest in fc7, Fig. 4 right) and
Run (a run folder's curves, confusion matrix and configuration).

The parts, top to bottom: :mod:`.pictures` (arrays → PNG, grids of maps, heat-map overlays),
:mod:`.activations` (forward hooks: each layer's output), :mod:`.why` (Grad-CAM, occlusion),
:mod:`.neighbours` (the fc7 bank: computed on start or read from an ``.npy``), :mod:`.session`
(the checkpoint, the data, the run and the uploaded images: what every request asks of them) and
:mod:`.app` (the Starlette routes; the only module that needs the ``[explore]`` extra). Every
probability goes through :func:`alexnet.inference.evaluate.batch_probabilities`, the one inference path.
"""

from __future__ import annotations

import importlib.util

from alexnet.errors import AlexNetError

SERVER_MODULES = {"starlette": "starlette", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def require_server(command: str = "explore", modules: dict[str, str] = SERVER_MODULES) -> None:
    """Fail in one line, before anything starts, when the web server packages ``modules`` (module →
    package) that ``alexnet COMMAND`` needs are not installed; its extra has the command's name."""
    missing = [package for module, package in modules.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise AlexNetError(f"alexnet {command} needs {', '.join(missing)}: pip install 'alexnet[{command}]'")
