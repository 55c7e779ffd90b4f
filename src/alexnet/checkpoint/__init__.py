"""Self-describing checkpoints: save (atomic), load (``weights_only``), restore the model.

A checkpoint carries everything needed to evaluate or predict without flags, the way torchvision's
weights carry their metadata: the registry name of the architecture and its options, the class
names, the input size, the preprocessing with its statistics (``Preprocess.to_state()``), and
provenance (recipe, resolved config, package and torch versions, git commit, time). A training
checkpoint also holds ``train_state`` (optimizer, scheduler, RNG states, epoch, step).

One module per concern; this package re-exports their public names, so ``checkpoint.load(...)``:

* :mod:`~alexnet.checkpoint.format`: :class:`Checkpoint`, :func:`save`, :func:`load`, :func:`from_model`,
  :func:`check_safe` (every value loads weights-only);
* :mod:`~alexnet.checkpoint.safetensors`: the safetensors form (``alexnet export --format safetensors``);
* :mod:`~alexnet.checkpoint.diagnose`: what a file that is not a checkpoint really is, torch's
  unpickler errors as one-line messages;
* :mod:`~alexnet.checkpoint.provenance`: :func:`collect_provenance`, the git commit, torchvision's version;
* :mod:`~alexnet.checkpoint.restore`: :func:`restore_model` (the model, its tensors checked) and
  :func:`check_state_dict`;
* :mod:`~alexnet.checkpoint.onnx_model`: an exported .onnx file (``alexnet export --format onnx``, fp32
  or int8): :class:`OnnxMetadata` in its metadata_props, :func:`read_onnx_metadata` (the one reader,
  validated), :func:`load_onnx` (the ONNX Runtime session as a model for evaluation).

:mod:`alexnet.tools.interop` imports this package, never the reverse.
"""

from alexnet.checkpoint.diagnose import read_weights_only, what_file
from alexnet.checkpoint.format import FORMAT, FORMAT_VERSION, Checkpoint, check_safe, from_model, load, save, save_safetensors
from alexnet.checkpoint.onnx_model import OnnxMetadata, is_onnx, load_onnx
from alexnet.checkpoint.onnx_model import read_metadata as read_onnx_metadata
from alexnet.checkpoint.provenance import collect_provenance, git_commit, torchvision_version
from alexnet.checkpoint.restore import check_state_dict, restore_model
from alexnet.checkpoint.safetensors import is_safetensors

__all__ = [
    "FORMAT", "FORMAT_VERSION", "Checkpoint", "OnnxMetadata", "check_safe", "check_state_dict", "collect_provenance", "from_model",
    "git_commit", "is_onnx", "is_safetensors", "load", "load_onnx", "read_onnx_metadata", "read_weights_only", "restore_model", "save",
    "save_safetensors", "torchvision_version", "what_file",
]
