"""One rule for turning a ``device`` parameter into a torch device."""

from typing import Any

import torch


def resolve_device(device: Any) -> torch.device:
    """Turn ``'auto'`` / ``'cpu'`` / ``'cuda'`` / ``'cuda:1'`` / a ``torch.device`` into a device.

    :param device: 'auto' (or None, '') = CUDA when available, else the CPU
    :raises ValueError: when CUDA is asked for and absent
    """
    if isinstance(device, torch.device):
        name = device.type
    else:
        name = str(device or 'auto')
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError('device cuda asked for, but CUDA is not available')
    return torch.device(device if isinstance(device, torch.device) else name)
