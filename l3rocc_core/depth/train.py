r"""Training of the depth network (``l3rocc train --model depth``).

Data: the sequences of :mod:`l3rocc_core.depth.data` (rendered into ``--data`` first when the
folder lacks them; resumable). The last ``val_sequences`` sequence files are held out for
validation. Every step draws ``batch_size`` samples, each with random photometric changes
(gain, gamma, white balance, noise, blur), a random crop and a random mirror; the pose is left
out of a ``pose_drop`` share of them (no ground prior, no sweep) and the sweep out of a
``sweep_drop`` share of the rest, so that the network works in every input situation.

Loss per pixel with a true depth in the model's range, moving-object pixels weighted
``moving_weight`` times:

- L1 of ``e = log(true depth / predicted depth)`` (scale-aware: the error is relative);
- ``grad_weight`` x gradient matching: L1 of the x and y differences of ``e`` at 1, 1/2 and
  1/4 scale (sharp, correctly placed depth edges);
- ``conf_weight`` x binary cross-entropy of the confidence against ``|error| / depth < 0.1``
  (so it is a calibrated probability of a good depth; pixels without a surface, such as the sky,
  count as bad).

Outputs in ``--out``: ``train.csv``, ``val.csv``, ``loss.png``, ``last.pt`` (resume),
``best.pt`` (lowest validation AbsRel), and with ``export_default`` the shipped
``l3rocc_core/depth/checkpoints/default.pt`` + ``default.json`` (provenance).
"""

from dataclasses import asdict, dataclass, field
import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from l3rocc_core import metrics as M
from l3rocc_core.camera import PinholeCamera
from l3rocc_core.depth import data as depth_data
from l3rocc_core.depth.network import (CHANNELS, DEFAULT_CHECKPOINT, DEFAULT_NET, build_model,
                                       depth_range, geometry_channels, input_channels,
                                       pad_to_multiple)

_CONF_GOOD = 0.1          # a depth within this relative error counts as good (confidence target)
_RAY_X = CHANNELS.index('ray_x')


@dataclass
class DepthTrainOptions:
    """Everything ``l3rocc train --model depth`` takes (see the module docstring)."""

    data: str
    out: str
    steps: int
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    seed: int = 0
    device: str = 'auto'
    threads: int = 1
    data_seed: int = 0
    sequences: int = 160
    val_sequences: int = 16
    val_every: int = 200
    crop: Tuple[int, int] = (96, 128)
    widths: List[int] = field(default_factory=lambda: [16, 32, 48, 64])
    moving_weight: float = 3.0
    grad_weight: float = 0.5
    conf_weight: float = 0.2
    pose_drop: float = 0.15
    sweep_drop: float = 0.25
    resume: bool = False
    export_default: bool = False
    export_path: str = ''
    command: str = ''


def camera_of(K: np.ndarray, width: int, height: int) -> PinholeCamera:
    """Pinhole camera from a 3x3 K and the image size."""
    return PinholeCamera(width, height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]),
                         float(K[1, 2]))


def sample_inputs(arrays: Dict[str, np.ndarray], i: int, net: Dict[str, Any],
                  rng: Optional[np.random.Generator] = None, pose_drop: float = 0.0,
                  sweep_drop: float = 0.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network input and targets of sample ``i`` (augmented when ``rng`` is given).

    :return: (input float32 [11, H, W], true depth float32 [H, W] metres, moving bool [H, W])
    """
    image = arrays['image'][i].astype(np.float32)
    h, w = image.shape[:2]
    has_pose = rng is None or rng.random() >= pose_drop
    use_sweep = has_pose and (rng is None or rng.random() >= sweep_drop)
    if rng is not None:
        x = image / 255.0
        x = np.clip(x * rng.uniform(0.6, 1.5) * rng.uniform(0.88, 1.12, 3), 0, 1)
        x = x ** rng.uniform(0.7, 1.4)
        if rng.random() < 0.5:
            import cv2
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.0))
        x = x + rng.normal(0, rng.uniform(0.0, 0.03), x.shape).astype(np.float32)
        image = np.clip(x, 0, 1) * 255.0
    cam = camera_of(arrays['K'][i], w, h)
    geo = geometry_channels(cam, arrays['T_world_cam'][i] if has_pose else None,
                            depth_range(net), float(net['prior_max_depth']))
    sweep = None
    if use_sweep and arrays['sweep_conf'][i].any():
        sweep = (arrays['sweep_depth'][i].astype(np.float32),
                 arrays['sweep_conf'][i].astype(np.float32))
    x = input_channels(image, geo, sweep, depth_range(net))
    return x, arrays['depth'][i].astype(np.float32), arrays['moving'][i]


def make_batch(arrays: Dict[str, np.ndarray], indices: np.ndarray, net: Dict[str, Any],
               rng: np.random.Generator, opts: DepthTrainOptions
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augmented, cropped, randomly mirrored training batch.

    :return: (input [B, 11, h, w], depth [B, h, w], moving [B, h, w]) with (h, w) = crop
    """
    ch, cw = opts.crop
    xs, ds, ms = [], [], []
    for i in indices:
        x, d, m = sample_inputs(arrays, int(i), net, rng, opts.pose_drop, opts.sweep_drop)
        H, W = d.shape
        y0, x0 = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
        rows, cols = slice(y0, y0 + ch), slice(x0, x0 + cw)
        x, d, m = x[:, rows, cols], d[rows, cols], m[rows, cols]
        if rng.random() < 0.5:
            # A mirrored image is a mirrored world: only the ray's x changes sign.
            x, d, m = x[:, :, ::-1].copy(), d[:, ::-1], m[:, ::-1]
            x[_RAY_X] *= -1.0
        xs.append(x)
        ds.append(np.ascontiguousarray(d))
        ms.append(np.ascontiguousarray(m))
    return (torch.as_tensor(np.stack(xs)), torch.as_tensor(np.stack(ds)),
            torch.as_tensor(np.stack(ms)))


def depth_loss(inv: torch.Tensor, logit: torch.Tensor, depth: torch.Tensor,
               moving: torch.Tensor, net: Dict[str, Any], moving_weight: float = 3.0,
               grad_weight: float = 0.5, conf_weight: float = 0.2) -> Dict[str, torch.Tensor]:
    """Return the training loss terms (see the module docstring).

    :param inv: float32 [B, H, W] predicted inverse depth (1/metres)
    :param logit: float32 [B, H, W] confidence logit
    :param depth: float32 [B, H, W] true depth (metres, 0 = no surface)
    :param moving: bool [B, H, W] pixels on moving objects
    :return: dict of scalars: total, l1, grad, conf
    """
    valid = (depth >= float(net['min_depth'])) & (depth <= float(net['max_depth']))
    e = torch.log(inv.clamp_min(1e-6)) + torch.log(depth.clamp_min(1e-6))
    e = torch.where(valid, e, torch.zeros_like(e))
    w = (1.0 + (moving_weight - 1.0) * moving.float()) * valid.float()
    l1 = (w * e.abs()).sum() / w.sum().clamp_min(1.0)
    grad = e.new_zeros(())
    for s in (1, 2, 4):
        es, ws = e[:, ::s, ::s], w[:, ::s, ::s]
        for dim in (1, 2):
            n = es.shape[dim] - 1
            pair = ws.narrow(dim, 0, n).minimum(ws.narrow(dim, 1, n))
            diff = (es.narrow(dim, 1, n) - es.narrow(dim, 0, n)).abs()
            grad = grad + (pair * diff).sum() / pair.sum().clamp_min(1.0)
    good = valid & ((torch.exp(-e.detach()) - 1.0).abs() < _CONF_GOOD)
    counted = valid | (depth <= 0)
    bce = F.binary_cross_entropy_with_logits(logit, good.float(), reduction='none')
    conf = (bce * counted.float()).sum() / counted.float().sum().clamp_min(1.0)
    total = l1 + grad_weight * grad + conf_weight * conf
    return {'total': total, 'l1': l1, 'grad': grad, 'conf': conf}


@torch.inference_mode()
def validate(model: torch.nn.Module, arrays: Dict[str, np.ndarray], indices: np.ndarray,
             net: Dict[str, Any], device: torch.device, batch: int = 16) -> Dict[str, float]:
    """Score full frames without augmentation (pose and sweep as given).

    :return: val_abs_rel, val_delta1, val_moving_abs_rel, val_moving_delta1 (NaN without
        moving pixels), val_conf_gap (mean confidence of the pixels within 10 % minus that of
        the others)
    """
    from l3rocc_core.depth.truth import pooled_depth_metrics

    model.eval()
    lo, hi = float(net['min_depth']), float(net['max_depth'])
    rows, moving_rows, conf_gap = [], [], []
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        items = [sample_inputs(arrays, int(i), net) for i in idx]
        x = torch.as_tensor(np.stack([t[0] for t in items]), device=device)
        h, w = x.shape[-2:]
        inv, logit = model(pad_to_multiple(x))
        pred = (1.0 / inv[:, :h, :w]).cpu().numpy()
        conf = torch.sigmoid(logit[:, :h, :w]).cpu().numpy()
        for k, (_, d, m) in enumerate(items):
            d = np.where(d >= lo, d, 0.0)
            rows.append(M.depth_metrics(pred[k], d, None, hi))
            moving_rows.append(M.depth_metrics(pred[k], np.where(m, d, 0.0), None, hi))
            good = (d > 0) & (d <= hi) & (np.abs(pred[k] - d) < _CONF_GOOD * d)
            if good.any() and not good.all():
                conf_gap.append(float(conf[k][good].mean() - conf[k][~good].mean()))
    model.train()
    a, b = pooled_depth_metrics(rows), pooled_depth_metrics(moving_rows)
    out = {'val_abs_rel': a['abs_rel'], 'val_delta1': a['delta_1_25'],
           'val_moving_abs_rel': b['abs_rel'], 'val_moving_delta1': b['delta_1_25'],
           'val_conf_gap': float(np.mean(conf_gap)) if conf_gap else 0.0}
    return {k: float('nan') if v is None else v for k, v in out.items()}


def plot_depth_curves(out_dir: str) -> Optional[str]:
    """Write ``OUT/loss.png`` (training terms, validation AbsRel and delta1); return its path."""
    from l3rocc_core.refiner.train import _read_csv

    tr, va = (_read_csv(os.path.join(out_dir, n)) for n in ('train.csv', 'val.csv'))
    if not tr:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = ((tr, ('total', 'l1', 'grad', 'conf'), 'training loss (interval means)', 'log'),
              (va, ('val_abs_rel', 'val_moving_abs_rel', 'val_delta1', 'val_moving_delta1'),
               'validation (held-out sequences)', 'linear'))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (rows, keys, title, scale) in zip(axes, panels):
        for key in keys if rows else ():
            ax.plot([r['step'] for r in rows], [r[key] for r in rows], label=key)
        ax.set(xlabel='step', title=title, yscale=scale)
        ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, 'loss.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


def export(model: torch.nn.Module, net: Dict[str, Any], path: str, provenance: Dict[str, Any]
           ) -> None:
    """Write a shippable checkpoint (``state_dict`` + ``net``) and its provenance JSON."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({'state_dict': state, 'net': dict(net)}, path)
    with open(os.path.splitext(path)[0] + '.json', 'w', encoding='utf-8') as fh:
        json.dump(provenance, fh, indent=2, default=str)


def train(opts: DepthTrainOptions, progress: bool = True) -> Dict[str, Any]:
    """Render the data if needed, train, validate, export; return the summary.

    :raises ValueError: options that cannot work
    """
    from tqdm import tqdm

    from l3rocc_core.refiner.train import _write_csv, cosine_factor

    if opts.steps < 1 or opts.batch_size < 1:
        raise ValueError(f'need steps >= 1 and batch size >= 1, got {opts.steps}, '
                         f'{opts.batch_size}')
    if opts.val_sequences >= opts.sequences:
        raise ValueError('val_sequences must be fewer than sequences')
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    device = _device(opts.device)
    t_start = time.perf_counter()
    depth_data.generate(opts.data, opts.data_seed, opts.sequences, progress=progress)
    arrays = depth_data.load(opts.data, opts.sequences)
    n_seq = int(arrays['sequence'].max()) + 1
    val_mask = arrays['sequence'] >= n_seq - opts.val_sequences
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    h, w = arrays['depth'].shape[1:]
    if opts.crop[0] > h or opts.crop[1] > w:
        raise ValueError(f'crop {opts.crop} is larger than the frames {h}x{w}')
    net = dict(DEFAULT_NET, widths=list(opts.widths))
    torch.manual_seed(opts.seed)
    model = build_model(net).to(device).train()
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    os.makedirs(opts.out, exist_ok=True)
    last_path, best_path = (os.path.join(opts.out, n) for n in ('last.pt', 'best.pt'))
    step, best = 0, float('inf')
    if opts.resume and os.path.isfile(last_path):
        ckpt = torch.load(last_path, map_location='cpu', weights_only=True)
        model.load_state_dict(ckpt['state_dict'])
        optim.load_state_dict(ckpt['optimizer'])
        step, best = int(ckpt['step']), float(ckpt['best'])
    elif not opts.resume:
        for name in ('train.csv', 'val.csv'):
            if os.path.isfile(os.path.join(opts.out, name)):
                os.remove(os.path.join(opts.out, name))
    val_pick = val_idx[np.linspace(0, len(val_idx) - 1, min(len(val_idx), 160)).astype(int)]
    log_every = min(25, opts.val_every)
    acc: Dict[str, float] = {}
    bar = tqdm(total=opts.steps, initial=step, desc='train depth', unit='step',
               disable=not progress)
    while step < opts.steps:
        # One generator per step: a resumed run draws the same batches as an uninterrupted one.
        rng = np.random.default_rng([opts.seed, step])
        x, d, m = make_batch(arrays, rng.choice(train_idx, opts.batch_size), net, rng, opts)
        for g in optim.param_groups:
            g['lr'] = opts.lr * cosine_factor(step, opts.steps, opts.warmup_steps)
        inv, logit = model(x.to(device))
        terms = depth_loss(inv, logit, d.to(device), m.to(device), net, opts.moving_weight,
                           opts.grad_weight, opts.conf_weight)
        optim.zero_grad(set_to_none=True)
        terms['total'].backward()
        optim.step()
        step += 1
        bar.update(1)
        for k, v in terms.items():
            acc[k] = acc.get(k, 0.0) + v.item() / log_every
        if step % log_every == 0:
            _write_csv(os.path.join(opts.out, 'train.csv'),
                       {'step': step, 'lr': optim.param_groups[0]['lr'], **acc})
            bar.set_postfix(loss=f'{acc["total"]:.3f}')
            acc = {}
        if step % opts.val_every == 0 or step == opts.steps:
            metrics = validate(model, arrays, val_pick, net, device)
            _write_csv(os.path.join(opts.out, 'val.csv'), {'step': step, **metrics})
            if metrics['val_abs_rel'] < best:
                best = metrics['val_abs_rel']
                torch.save({'state_dict': model.state_dict(), 'net': net, 'step': step,
                            'metrics': metrics}, best_path)
            torch.save({'state_dict': model.state_dict(), 'optimizer': optim.state_dict(),
                        'step': step, 'best': best}, last_path)
            plot_depth_curves(opts.out)
    bar.close()
    ckpt = torch.load(best_path, map_location='cpu', weights_only=True)
    model.load_state_dict(ckpt['state_dict'])
    summary = {'command': opts.command, 'options': asdict(opts), 'data_seed': opts.data_seed,
               'train_samples': int(len(train_idx)), 'val_samples': int(len(val_idx)),
               'best_step': int(ckpt['step']), 'val': ckpt['metrics'],
               'wall_s': round(time.perf_counter() - t_start, 1),
               'parameters': int(sum(p.numel() for p in model.parameters()))}
    target = DEFAULT_CHECKPOINT if opts.export_default else opts.export_path
    if target:
        export(model.cpu(), net, target, summary)
        summary['exported'] = target
    return summary
