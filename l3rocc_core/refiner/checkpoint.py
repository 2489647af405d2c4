"""Refiner checkpoints: weights plus plain-data metadata, read with ``weights_only=True`` only.

A model checkpoint is a dict of plain types and tensors (nothing else can be unpickled safely)::

    {'format': 'l3rocc-refiner', 'version': 1,
     'arch': NetConfig.to_dict(),            # architecture hyper-parameters
     'feature_names': [...],                 # input channels, in order
     'state_dict': {name: tensor},           # float32, or float16 for an exported checkpoint
     'meta': {'command': str, 'data_seed': int, 'metrics': {...}, 'created': str, ...}}

A training state (``--resume``) adds ``optimizer``, ``scheduler``, ``step``, ``epoch`` and RNG
states, all plain data as well.
"""

import os
import pickle
import tempfile
import zipfile
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from l3rocc_core.refiner.network import NetConfig, TemporalOccupancyNet

FORMAT = 'l3rocc-refiner'
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used.

    :param kind: diagnostics counter name: ``checkpoint_missing``, ``checkpoint_corrupt``,
        ``checkpoint_unsafe`` (it holds objects other than plain data and tensors) or
        ``checkpoint_incompatible`` (format, version, architecture or feature names)
    :param message: what is wrong and with which file
    """

    def __init__(self, kind: str, message: str) -> None:
        """Store the kind and the message."""
        super().__init__(message)
        self.kind = kind


_PLAIN = (str, int, float, bool, type(None))


def check_plain(value: Any, where: str = 'meta') -> None:
    """Check that ``value`` is made of dicts (str keys), lists, tuples, plain scalars and tensors.

    :raises TypeError: naming the first offending entry
    """
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f'{where}: key {k!r} is not a str or int')
            check_plain(v, f'{where}.{k}')
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f'{where}[{i}]')
    elif type(value) not in _PLAIN and not isinstance(value, torch.Tensor):
        raise TypeError(f'{where}: {type(value).__name__} is not plain data')


def atomic_save(obj: Dict[str, Any], path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename (never half-written).

    :param obj: plain data and tensors only (checked)
    :param path: destination file
    """
    check_plain(obj, 'checkpoint')
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.pt', dir=folder)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint is a normal file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checkpoint(path: str, map_location: Any = 'cpu') -> Dict[str, Any]:
    """Read a checkpoint file with ``torch.load(weights_only=True)``.

    :param path: ``.pt`` file
    :param map_location: where tensors go
    :return: the checkpoint dict
    :raises CheckpointError: missing, unreadable, corrupt or unsafe file
    """
    if not path or not os.path.isfile(path):
        raise CheckpointError('checkpoint_missing', f'refiner checkpoint not found: {path!r}')
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = [ln.strip() for ln in text.splitlines() if 'GLOBAL' in ln]
        if detail:  # the file names code (a class or function) to run while unpickling
            raise CheckpointError(
                'checkpoint_unsafe', f'{path}: refused to load objects other than plain data and '
                f'tensors (nothing was executed): {detail[0][:300]}') from exc
        raise CheckpointError('checkpoint_corrupt', f'{path}: not a readable checkpoint: '
                              f'{exc}') from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, zipfile.BadZipFile) as exc:
        raise CheckpointError('checkpoint_corrupt',
                              f'{path}: corrupt or truncated checkpoint: {exc}') from exc
    if not isinstance(obj, dict):
        raise CheckpointError('checkpoint_incompatible',
                              f'{path}: expected a dict, found {type(obj).__name__}')
    return obj


def model_checkpoint(model: TemporalOccupancyNet, meta: Optional[Dict[str, Any]] = None,
                     half: bool = False) -> Dict[str, Any]:
    """Build the checkpoint dict of ``model``.

    :param model: the network
    :param meta: provenance (command, data_seed, metrics, ...), plain data only
    :param half: store floating weights as float16 (half the size; loaded back as float32)
    """
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        state[k] = v.half() if half and v.is_floating_point() else v.clone()
    meta = dict(meta or {})
    meta.setdefault('torch_version', str(torch.__version__))
    return {'format': FORMAT, 'version': VERSION, 'arch': model.config.to_dict(),
            'feature_names': list(model.config.feature_names), 'state_dict': state,
            'meta': meta}


def save_model(path: str, model: TemporalOccupancyNet, meta: Optional[Dict[str, Any]] = None,
               half: bool = False) -> None:
    """Write the model checkpoint atomically (see :func:`model_checkpoint`)."""
    atomic_save(model_checkpoint(model, meta, half), path)


def model_from_checkpoint(ckpt: Dict[str, Any], path: str = '<memory>',
                          feature_names: Optional[Sequence[str]] = None
                          ) -> Tuple[TemporalOccupancyNet, Dict[str, Any]]:
    """Build the network stored in a checkpoint dict.

    :param ckpt: from :func:`read_checkpoint`
    :param path: for messages
    :param feature_names: the caller's input channels; must equal the checkpoint's (None = any)
    :return: (model in eval mode on the CPU, float32; metadata dict)
    :raises CheckpointError: ``checkpoint_incompatible`` with the reason
    """
    if ckpt.get('format') != FORMAT:
        raise CheckpointError('checkpoint_incompatible',
                              f'{path}: not an l3rocc refiner checkpoint (format '
                              f'{ckpt.get("format")!r}, expected {FORMAT!r})')
    version = ckpt.get('version')
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError('checkpoint_incompatible',
                              f'{path}: checkpoint version {version!r} is newer than this code '
                              f'reads ({VERSION})')
    try:
        config = NetConfig.from_dict(dict(ckpt['arch']))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError('checkpoint_incompatible',
                              f'{path}: unusable architecture: {exc}') from exc
    stored = tuple(ckpt.get('feature_names', ()))
    if stored != config.feature_names:
        raise CheckpointError('checkpoint_incompatible',
                              f'{path}: feature_names {list(stored)} disagree with the '
                              f'architecture {list(config.feature_names)}')
    if feature_names is not None and tuple(feature_names) != stored:
        raise CheckpointError('checkpoint_incompatible',
                              f'{path}: trained on features {list(stored)}, but the fusion stage '
                              f'provides {list(feature_names)}; retrain with `l3rocc train`')
    model = TemporalOccupancyNet(config)
    state = ckpt.get('state_dict')
    if not isinstance(state, dict):
        raise CheckpointError('checkpoint_incompatible', f'{path}: no state_dict')
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state.items()})
    except (RuntimeError, AttributeError) as exc:
        raise CheckpointError('checkpoint_incompatible',
                              f'{path}: weights do not match the architecture: '
                              f'{str(exc).splitlines()[0]}') from exc
    meta = ckpt.get('meta') or {}
    return model.eval(), dict(meta)


def load_model(path: str, map_location: Any = 'cpu',
               feature_names: Optional[Sequence[str]] = None
               ) -> Tuple[TemporalOccupancyNet, Dict[str, Any]]:
    """Read a checkpoint file and build its network.

    :param path: ``.pt`` file
    :param map_location: where tensors go while reading
    :param feature_names: the caller's input channels (None = accept the checkpoint's)
    :return: (model in eval mode, float32; metadata dict)
    :raises CheckpointError: see :class:`CheckpointError`
    """
    return model_from_checkpoint(read_checkpoint(path, map_location), path, feature_names)
