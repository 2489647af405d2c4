"""Recovering from CUDA running out of memory inside a pipeline stage."""

from typing import Optional


def is_cuda_oom(exc: BaseException) -> bool:
    """Tell whether ``exc`` is, or wraps (``StageError``, ``__cause__``), a CUDA OOM error."""
    import torch
    oom = getattr(torch.cuda, 'OutOfMemoryError', None)
    if oom is None:
        return False
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, oom):
            return True
        exc = getattr(exc, 'error', None) or exc.__cause__
        seen += 1
    return False


def forget_traceback(exc: Optional[BaseException]) -> None:
    """Drop the tracebacks of ``exc`` and of the errors it wraps or was raised from.

    A traceback keeps every frame it passed through alive, with their local variables: after a
    CUDA OOM inside a stage, those are the stage's device tensors, which
    ``torch.cuda.empty_cache`` cannot free while the exception is referenced.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = getattr(exc, 'error', None) or exc.__cause__ or exc.__context__
