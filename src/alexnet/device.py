"""The compute device and the one autocast code path (device and precision live in the config)."""

from __future__ import annotations

import torch

from .errors import AlexNetError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # anything else ("off", "fp32"): no autocast


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AlexNetError(f"--device {name!r}: not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlexNetError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AlexNetError(f"--device {name}: MPS is not available on this machine")
    return device


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on ``device``, or a disabled context for ``off``."""
    dtype = AMP_DTYPES.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
