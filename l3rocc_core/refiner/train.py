"""Training of the temporal-attention refiner on ``l3rocc synth --dataset`` shards.

One call of :func:`train` runs the whole procedure (``l3rocc train`` is a thin CLI over it):

- seeded everything: model initialisation from ``seed``, batch order and augmentation from
  ``(seed, epoch)`` / ``(seed, step)`` (see :mod:`l3rocc_core.refiner.training_data`), so
  ``--resume`` continues with exactly the batches an uninterrupted run would have seen;
- AdamW, linear warm-up then cosine decay to 5 % of ``lr`` over the planned steps;
- the loss of :mod:`l3rocc_core.refiner.losses` (``temp_weight`` = the smoothness weight), with
  weight 1 on voxels observed by any window frame up to the slice (``observed_window``), which
  the network must keep, and ``unobserved_weight`` elsewhere; with ``motion_weight`` > 0 the
  network gets the occupancy-flow head and the motion-consistency term (the shards' ``flow``),
  and validation reports the flow's end-point error (``val_flow_epe``, ``_dynamic`` on moving
  parts, ``_zero`` for a zero-flow prediction); with ``stream_weight`` > 0 the streamed
  smoothness term (two more forward passes per step, over the first ``T-2`` and ``T-1``
  slices: the newest slices a stream would publish before this one);
- gradient checkpointing of the half-resolution trunk (``checkpointing``), mixed precision
  (bfloat16 autocast) on CUDA only (``amp``);
- ``OUT/train.csv`` (every ``log_every`` steps: loss terms, lr), ``OUT/val.csv`` (each
  validation), ``OUT/loss.png``; ``OUT/last.pt`` (resumable state) at every validation and at
  the end, ``OUT/best.pt`` (model with the best validation IoU);
- validation (every epoch, or every ``val_every`` steps): over the voxels that slice's frame
  observed (``observed``, the contract's scoring mask), IoU of the
  network at threshold 0.5 against the ground truth (all slices of the window and the newest
  slice), the same for the geometry-only answer (``sigmoid(logodds)``, unobserved = free), and
  flicker (share of static voxels observed in two consecutive slices whose predicted state
  changes, as :mod:`l3rocc_core.metrics` defines it), for both;
- at the end, the output bias of the best model is calibrated on the validation split: the
  logit offset (-3 .. 3 in steps of 0.25) that maximises the validation IoU at the 0.5
  threshold is folded into ``logit_bias`` (``calibrate``; the offset and the uncalibrated IoU are
  recorded), so the contract's threshold is the IoU-optimal one for this model;
- then the best model is scored on the ``test`` split when the data has one
  (``test_*`` metrics, ``test_samples`` = 0: all, < 0: skip);
- ``export_default``: the best model, float16 weights, with its provenance (command, data seed,
  metrics) to ``l3rocc_core/refiner/checkpoints/default.pt``.
"""

import csv
from dataclasses import asdict, dataclass, field, replace
import datetime
import math
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from l3rocc_core.refiner.checkpoint import (atomic_save, model_checkpoint, model_from_checkpoint,
                                            read_checkpoint, save_model)
from l3rocc_core.refiner.losses import (LossWeights, refiner_loss, stream_smoothness,
                                        voxel_weights)
from l3rocc_core.device import resolve_device
from l3rocc_core.refiner.network import (BUNDLED_CHECKPOINT, DEFAULT_FEATURE_NAMES, NetConfig,
                                         TemporalOccupancyNet, count_parameters)
from l3rocc_core.refiner.training_data import DatasetError, ShardBatches, ShardDataset, collate


@dataclass
class TrainOptions:
    """Everything one training run depends on (``l3rocc train`` flags of the same names)."""

    data: str
    out: str
    epochs: int = 0
    steps: int = 0
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    temp_weight: float = 0.3
    lambda_geo: float = 1.0
    lambda_l1: float = 0.2
    unobserved_weight: float = 0.1
    pos_weight: float = 1.0
    dynamic_weight: float = 1.0
    motion_weight: float = 0.0
    stream_weight: float = 0.0
    seq_len: int = 16
    voxel_size: float = 0.05
    checkpointing: bool = False
    amp: bool = False
    resume: bool = False
    init: str = ''
    seed: int = 0
    device: str = 'auto'
    threads: int = 0
    val_every: int = 0
    val_samples: int = 64
    test_samples: int = 0
    log_every: int = 10
    export_default: bool = False
    export_path: str = ''
    width: int = 16
    heads: int = 2
    attn_blocks: int = 1
    causal: bool = False
    up_channels: int = 4
    head_channels: int = 8
    padding: str = 'replicate'
    z_shift: int = 4
    short_window_prob: float = 0.25
    command: str = ''
    stop_after: int = 0
    calibrate: bool = True
    extra: Dict[str, Any] = field(default_factory=dict)


class TrainError(RuntimeError):
    """A training run that cannot start or continue (bad data, options, or resume state)."""

    kind = 'train_failed'


def cosine_factor(step: int, total: int, warmup: int, floor: float = 0.05) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine from 1 to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _geometry_logodds_scale(meta: Dict[str, Any]) -> float:
    """Return the factor that turns the ``logodds`` feature back into log-odds."""
    return float(meta.get('logodds_scale', 3.5))


class _Counter:
    """Accumulated confusion and flicker counts of one predictor."""

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0
        self.ntp = self.nfp = self.nfn = 0
        self.changed = self.pairs = 0
        self.dtp = self.dfp = self.dfn = 0

    def add(self, pred: torch.Tensor, gt: torch.Tensor, obs: torch.Tensor,
            dyn: torch.Tensor) -> None:
        """Count a batch: bool [B, T, x, y, z] each."""
        tp = pred & gt & obs
        self.tp += int(tp.sum())
        self.fp += int((pred & ~gt & obs).sum())
        self.fn += int((~pred & gt & obs).sum())
        p, g, o = pred[:, -1], gt[:, -1], obs[:, -1]
        self.ntp += int((p & g & o).sum())
        self.nfp += int((p & ~g & o).sum())
        self.nfn += int((~p & g & o).sum())
        d = obs & dyn
        self.dtp += int((pred & gt & d).sum())
        self.dfp += int((pred & ~gt & d).sum())
        self.dfn += int((~pred & gt & d).sum())
        keep = obs[:, 1:] & obs[:, :-1] & ~dyn[:, 1:] & ~dyn[:, :-1]
        self.changed += int(((pred[:, 1:] != pred[:, :-1]) & keep).sum())
        self.pairs += int(keep.sum())

    def result(self, prefix: str) -> Dict[str, float]:
        """Return IoU (window), newest-slice IoU, precision, recall, flicker, dynamic IoU."""
        def ratio(a: int, b: int) -> float:
            return a / b if b else float('nan')
        return {f'{prefix}iou': ratio(self.tp, self.tp + self.fp + self.fn),
                f'{prefix}iou_newest': ratio(self.ntp, self.ntp + self.nfp + self.nfn),
                f'{prefix}precision': ratio(self.tp, self.tp + self.fp),
                f'{prefix}recall': ratio(self.tp, self.tp + self.fn),
                f'{prefix}flicker': ratio(self.changed, self.pairs),
                f'{prefix}dynamic_iou': ratio(self.dtp, self.dtp + self.dfp + self.dfn)}


class _FlowCounter:
    """Accumulated end-point errors of predicted occupancy flow on matched voxels."""

    def __init__(self) -> None:
        self.sums = {'': 0.0, '_dynamic': 0.0, '_zero': 0.0}
        self.counts = {'': 0, '_dynamic': 0, '_zero': 0}

    def add(self, flow: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
            dyn: torch.Tensor) -> None:
        """Count a batch: flows [B, T, 3, x, y, z] (m/s), masks bool [B, T, x, y, z]."""
        err = torch.linalg.vector_norm(flow.float() - target.float(), dim=2)
        zero = torch.linalg.vector_norm(target.float(), dim=2)
        for key, e, m in (('', err, valid), ('_dynamic', err, valid & dyn),
                          ('_zero', zero, valid)):
            self.sums[key] += float(e[m].sum())
            self.counts[key] += int(m.sum())

    def result(self, prefix: str) -> Dict[str, float]:
        """Return mean end-point errors (m/s): all matched, moving-part, zero-flow baseline."""
        return {f'{prefix}flow_epe{k}': self.sums[k] / self.counts[k] if self.counts[k]
                else float('nan') for k in self.sums}


def _loss_terms(model: TemporalOccupancyNet, batch: Dict[str, torch.Tensor],
                device: torch.device, weights: Optional[LossWeights],
                use_amp: bool = False) -> Tuple[Dict[str, torch.Tensor], torch.Tensor,
                                                Optional[torch.Tensor]]:
    """Run the model on a batch and compute the loss terms.

    :return: (terms, logits float32 [B, T, X, Y, Z], flow [B, T, 3, X, Y, Z] or None); the flow
        head runs when ``weights.motion`` > 0 (the batch must hold ``flow`` / ``flow_valid``)
    """
    x = batch['features'].to(device, non_blocking=True)
    motion = weights is not None and weights.motion > 0
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        out = model(x, return_flow=motion)
    logits, flow = (out[0].float(), out[1].float()) if motion else (out.float(), None)
    extra = {'flow': flow, 'flow_target': batch['flow'].to(device),
             'flow_valid': batch['flow_valid'].to(device)} if motion else {}
    observed, known = batch['observed_window'].to(device), batch['known'].to(device)
    dynamic = batch['dynamic'].to(device)
    terms = refiner_loss(logits, batch['occupancy'].to(device), observed, known, weights,
                         dynamic, **extra)
    t = x.shape[1]
    if weights is not None and weights.stream > 0 and t >= 3:
        # What a stream publishes: the newest slice of the windows ending at T-3, T-2, T-1.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            earlier = [model(x[:, :t - k])[:, -1].float() for k in (2, 1)]
        newest = torch.sigmoid(torch.stack(earlier + [logits[:, -1]], 1))
        w = voxel_weights(observed[:, t - 2], known[:, t - 2], weights.unobserved)
        terms['stream'] = stream_smoothness(newest, w * (~dynamic[:, t - 2].bool()).float())
        terms['total'] = terms['total'] + weights.stream * terms['stream']
    return terms, logits, flow


def evaluate(model: TemporalOccupancyNet, dataset: ShardDataset, device: torch.device,
             batch_size: int, logodds_scale: float = 3.5, threshold: float = 0.5,
             loss_weights: Optional[LossWeights] = None) -> Dict[str, float]:
    """Score the network and the geometry-only answer on validation data.

    :return: ``val_loss``, ``val_iou``, ``val_iou_newest``, ``val_precision``, ``val_recall``,
        ``val_flicker`` and the same with ``geo_`` for ``sigmoid(logodds)`` (unobserved = free);
        with the motion term on, ``val_flow_epe`` (and ``_dynamic``, ``_zero``)
    """
    model.eval()
    net, geo = _Counter(), _Counter()
    flows = _FlowCounter()
    motion = loss_weights is not None and loss_weights.motion > 0
    if motion and not dataset.has_flow:  # e.g. an older test split
        motion, loss_weights = False, replace(loss_weights, motion=0.0)
    losses: List[float] = []
    li = model.logodds_index
    with torch.inference_mode():
        for s in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(s, min(len(dataset), s + batch_size))])
            x = batch['features'].to(device)
            gt = batch['occupancy'].to(device)
            obs = batch['observed'].to(device)
            dyn = batch['dynamic'].to(device)
            terms, logits, flow = _loss_terms(model, batch, device, loss_weights)
            losses.append(float(terms['total']))
            if motion:
                flows.add(flow, batch['flow'].to(device), batch['flow_valid'].to(device), dyn)
            net.add(torch.sigmoid(logits) >= threshold, gt, obs, dyn)
            if li >= 0:
                feat_obs = x[:, :, model.config.feature_names.index('observed')] > 0.5 \
                    if 'observed' in model.config.feature_names else torch.ones_like(gt)
                p_geo = torch.sigmoid(logodds_scale * x[:, :, li])
                geo.add((p_geo >= threshold) & feat_obs, gt, obs, dyn)
    out = {'val_loss': float(np.mean(losses)) if losses else float('nan')}
    out.update(net.result('val_'))
    if motion:
        out.update(flows.result('val_'))
    if li >= 0:
        out.update(geo.result('geo_'))
    return out


def _write_csv(path: str, row: Dict[str, Any]) -> None:
    new = not os.path.isfile(path)
    with open(path, 'a', newline='', encoding='utf-8') as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _read_csv(path: str) -> List[Dict[str, float]]:
    if not os.path.isfile(path):
        return []
    with open(path, 'r', encoding='utf-8') as fh:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def plot_curves(out_dir: str) -> Optional[str]:
    """Write ``OUT/loss.png`` from ``train.csv`` and ``val.csv``; return its path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    tr = _read_csv(os.path.join(out_dir, 'train.csv'))
    va = _read_csv(os.path.join(out_dir, 'val.csv'))
    if not tr:
        return None
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r['step'] for r in tr]
    for key in ('total', 'bce', 'temporal', 'l1'):
        ax0.plot(steps, [r[key] for r in tr], label=key)
    if va:
        ax0.plot([r['step'] for r in va], [r['val_loss'] for r in va], 'k--o', label='val total')
    ax0.set_xlabel('step')
    ax0.set_ylabel('loss')
    ax0.set_yscale('log')
    ax0.legend()
    ax0.set_title('training loss')
    if va:
        vs = [r['step'] for r in va]
        ax1.plot(vs, [r['val_iou'] for r in va], 'b-o', label='network IoU')
        if 'geo_iou' in va[0]:
            ax1.plot(vs, [r['geo_iou'] for r in va], 'b:', label='geometry IoU')
        ax1.set_ylabel('IoU')
        ax2 = ax1.twinx()
        ax2.plot(vs, [r['val_flicker'] for r in va], 'r-o', label='network flicker')
        if 'geo_flicker' in va[0]:
            ax2.plot(vs, [r['geo_flicker'] for r in va], 'r:', label='geometry flicker')
        ax2.set_ylabel('flicker')
        ax1.set_xlabel('step')
        lines = ax1.get_lines() + ax2.get_lines()
        ax1.legend(lines, [ln.get_label() for ln in lines], loc='lower right')
        ax1.set_title('validation (voxels observed by each frame)')
    fig.tight_layout()
    path = os.path.join(out_dir, 'loss.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _data_seed(meta: Dict[str, Any]) -> int:
    """Return the data seed of a split's meta: ``seed``, else the start of ``seed_range``."""
    if isinstance(meta.get('seed'), int):
        return int(meta['seed'])
    rng = meta.get('seed_range')
    return int(rng[0]) if isinstance(rng, list) and rng else -1


def _net_config(opts: TrainOptions, feature_names: tuple) -> NetConfig:
    return NetConfig(feature_names=feature_names, width=opts.width, heads=opts.heads,
                     attn_blocks=opts.attn_blocks, causal=opts.causal,
                     up_channels=opts.up_channels, head_channels=opts.head_channels,
                     padding=opts.padding, motion_head=opts.motion_weight > 0)


def _init_weights(model: TemporalOccupancyNet, path: str, feature_names: tuple) -> None:
    """Load the weights of checkpoint ``path`` into ``model`` (fine-tuning start).

    The architecture must equal the options' except ``causal``, which only masks the attention
    (no weights depend on it): a full-attention model can be fine-tuned into a causal one, and
    ``motion_head``: a flow head the checkpoint lacks starts freshly initialised (seeded), one
    the options do not ask for is dropped.

    :raises TrainError: unreadable file or a different architecture
    """
    try:
        ckpt = read_checkpoint(path, map_location='cpu')
        if 'model' in ckpt and 'format' not in ckpt:        # best.pt / last.pt of a run
            ckpt = ckpt['model']
        start, _ = model_from_checkpoint(ckpt, path, feature_names)
    except (OSError, RuntimeError) as exc:      # CheckpointError is a RuntimeError
        raise TrainError(f'--init {path}: {exc}') from exc
    if replace(start.config, causal=model.config.causal,
               motion_head=model.config.motion_head) != model.config:
        raise TrainError(f'--init {path}: architecture {asdict(start.config)} differs from the '
                         f'options {asdict(model.config)}')
    state = {k: v for k, v in start.state_dict().items()
             if model.config.motion_head or not k.startswith('flow_head.')}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith('flow_head.') for k in missing):
        raise TrainError(f'--init {path}: weights do not fit (missing {missing}, '
                         f'unexpected {unexpected})')


def train(opts: TrainOptions) -> Dict[str, Any]:
    """Run (or resume) a training run; see the module docstring.

    :return: summary: ``best`` validation metrics, ``steps``, ``seconds``, ``params``, paths
    :raises TrainError: unusable data, options or resume state
    """
    if (opts.steps <= 0) == (opts.epochs <= 0):
        raise TrainError('give exactly one of --steps or --epochs (> 0)')
    if opts.motion_weight < 0 or opts.stream_weight < 0:
        raise TrainError('--motion-weight and --stream-weight must be >= 0, got '
                         f'{opts.motion_weight} and {opts.stream_weight}')
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device)
    use_amp = bool(opts.amp and device.type == 'cuda')
    os.makedirs(opts.out, exist_ok=True)
    try:
        train_set = ShardDataset(opts.data, 'train', opts.seq_len)
        val_set = ShardDataset(opts.data, 'val', opts.seq_len, max_samples=opts.val_samples)
    except DatasetError as exc:
        raise TrainError(str(exc)) from exc
    meta = train_set.meta
    data_voxel = meta.get('voxel_size')
    if data_voxel is not None and abs(float(data_voxel) - opts.voxel_size) > 1e-9:
        raise TrainError(f'--voxel-size {opts.voxel_size} but the data has voxel_size '
                         f'{data_voxel}')
    feature_names = train_set.feature_names or DEFAULT_FEATURE_NAMES
    if len(feature_names) != train_set.sample_shape[1]:
        raise TrainError(f'shards hold C = {train_set.sample_shape[1]} channels; give '
                         'feature_names in meta.json')
    logodds_scale = _geometry_logodds_scale(meta)
    weights = LossWeights(geo=opts.lambda_geo, temporal=opts.temp_weight, l1=opts.lambda_l1,
                          unobserved=opts.unobserved_weight, pos_weight=opts.pos_weight,
                          dynamic=opts.dynamic_weight, motion=opts.motion_weight,
                          stream=opts.stream_weight)
    if opts.motion_weight > 0:
        for d in (train_set, val_set):
            if not d.has_flow:
                raise TrainError(f'--motion-weight needs flow targets, and the {d.split} '
                                 'shards have none: regenerate them with `l3rocc synth '
                                 '--dataset` (which writes flow and flow_valid)')

    torch.manual_seed(opts.seed)
    model = TemporalOccupancyNet(_net_config(opts, tuple(feature_names))).to(device)
    model.checkpointing = opts.checkpointing
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr,
                                  weight_decay=opts.weight_decay)
    batches = ShardBatches(train_set, opts.batch_size, opts.seed, z_shift=opts.z_shift,
                           short_window_prob=opts.short_window_prob)
    total = opts.steps if opts.steps > 0 else opts.epochs * batches.batches_per_epoch
    val_every = opts.val_every if opts.val_every > 0 else batches.batches_per_epoch
    warmup = min(opts.warmup_steps, max(0, total // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_factor(s, total, warmup))

    last_path = os.path.join(opts.out, 'last.pt')
    best_path = os.path.join(opts.out, 'best.pt')
    start_step, best, elapsed0 = 0, {}, 0.0
    if opts.resume and os.path.isfile(last_path):
        state = read_checkpoint(last_path, map_location=device)
        resumed, _ = model_from_checkpoint(state['model'], last_path, feature_names)
        if resumed.config != model.config:
            raise TrainError(f'{last_path}: architecture differs from the options')
        model.load_state_dict(resumed.state_dict())
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        start_step = int(state['step'])
        first_command = state['model'].get('meta', {}).get('command')
        if first_command and first_command != opts.command:
            opts.extra['resumed_with'] = opts.command
            opts.command = first_command
        best = dict(state.get('best', {}))
        elapsed0 = float(state.get('seconds', 0.0))
        if int(state.get('total', total)) != total:
            raise TrainError(f'{last_path}: planned {state["total"]} steps, now {total}; '
                             'resume with the same --steps/--epochs')
    else:
        if opts.init:
            _init_weights(model, opts.init, feature_names)
        for name in ('train.csv', 'val.csv'):
            if os.path.isfile(os.path.join(opts.out, name)):
                os.remove(os.path.join(opts.out, name))

    provenance = {
        'command': opts.command or 'l3rocc train (API)',
        'data': os.path.abspath(opts.data),
        'data_seed': _data_seed(meta),
        'data_seed_ranges': {name: list(d.meta.get('seed_range', []))
                             for name, d in (('train', train_set), ('val', val_set))},
        'train_seed': opts.seed,
        'voxel_size': opts.voxel_size,
        'seq_len': opts.seq_len,
        'train_samples': len(train_set),
        'val_samples': len(val_set),
        'options': {k: v for k, v in asdict(opts).items()
                    if isinstance(v, (str, int, float, bool))},
    }
    provenance.update({k: v for k, v in opts.extra.items() if isinstance(v, (str, int, float))})

    def save_last(step: int, seconds: float) -> None:
        atomic_save({'model': model_checkpoint(model, provenance),
                     'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                     'step': step, 'total': total, 'best': best, 'seconds': seconds}, last_path)

    def validate(step: int, seconds: float) -> None:
        nonlocal best
        metrics = evaluate(model, val_set, device, opts.batch_size, logodds_scale,
                           loss_weights=weights)
        model.train()
        row = {'step': step, 'epoch': step / batches.batches_per_epoch, 'seconds': seconds}
        row.update(metrics)
        _write_csv(os.path.join(opts.out, 'val.csv'), row)
        tqdm.write('val step %d: ' % step + ', '.join(
            f'{k} {v:.4f}' for k, v in metrics.items()))
        score = metrics['val_iou']
        if not best or (math.isfinite(score) and score > best.get('val_iou', -1.0)):
            best = dict(metrics, step=step)
            save_model(best_path, model, dict(provenance, metrics=best))
        save_last(step, seconds)
        plot_curves(opts.out)

    model.train()
    t_start = time.perf_counter()
    step = start_step
    bar = tqdm(total=total, initial=start_step, desc='train', unit='step', dynamic_ncols=True)
    sums: Dict[str, float] = {}
    n_sum = 0
    stop = min(total, opts.stop_after) if opts.stop_after > 0 else total
    for step, epoch, batch in batches.iterate(start_step):
        if step >= stop:
            break
        terms = _loss_terms(model, batch, device, weights, use_amp)[0]
        optimizer.zero_grad(set_to_none=True)
        terms['total'].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_sum += 1
        bar.update(1)
        done = step + 1
        if done % opts.log_every == 0 or done == total:
            row = {'step': done, 'epoch': epoch, 'lr': scheduler.get_last_lr()[0]}
            row.update({k: v / n_sum for k, v in sums.items()})
            _write_csv(os.path.join(opts.out, 'train.csv'), row)
            bar.set_postfix(loss=f'{row["total"]:.4f}')
            sums, n_sum = {}, 0
        if done % val_every == 0 or done == total:
            validate(done, elapsed0 + time.perf_counter() - t_start)
        step = done
    bar.close()
    seconds = elapsed0 + time.perf_counter() - t_start
    save_last(step, seconds)
    if step < total:  # interrupted on purpose (stop_after): resumable from last.pt
        return {'stopped': step, 'steps': total, 'last_path': last_path}
    summary = {'best': best, 'steps': total, 'seconds': seconds,
               'params': count_parameters(model), 'best_path': best_path,
               'last_path': last_path, 'loss_png': os.path.join(opts.out, 'loss.png')}
    best_model, best_meta = model_from_checkpoint(read_checkpoint(best_path), best_path)
    best_model.to(device)
    if opts.calibrate:
        offset, table = calibrate_offset(best_model, val_set, device, opts.batch_size)
        with torch.no_grad():
            best_model.logit_bias.add_(offset)
        calibrated = evaluate(best_model, val_set, device, opts.batch_size, logodds_scale,
                              loss_weights=weights)
        tqdm.write(f'calibration: logit offset {offset:+.2f}, val IoU '
                   f'{best.get("val_iou", float("nan")):.4f} -> {calibrated["val_iou"]:.4f}')
        best_meta['metrics'] = dict(calibrated, step=best.get('step', total),
                                    calibration_offset=offset,
                                    val_iou_uncalibrated=best.get('val_iou', float('nan')))
        summary['calibrated'] = best_meta['metrics']
        summary['calibration_table'] = table
    test_metrics = _test_metrics(opts, best_model, device, logodds_scale, weights)
    if test_metrics:
        summary['test'] = test_metrics
        best_meta['metrics'] = dict(best_meta.get('metrics', {}), **test_metrics)
    if opts.export_default or opts.export_path:
        dest = opts.export_path or BUNDLED_CHECKPOINT
        best_meta.update({'created': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'), 'train_seconds': round(seconds, 1),
            'params': count_parameters(best_model), 'version': 1})
        save_model(dest, best_model, best_meta, half=True)
        summary['exported'] = dest
    return summary


def calibrate_offset(model: TemporalOccupancyNet, dataset: ShardDataset, device: torch.device,
                     batch_size: int, threshold: float = 0.5,
                     offsets: Optional[np.ndarray] = None) -> Tuple[float, Dict[str, float]]:
    """Find the logit offset that maximises the IoU at ``threshold`` over observed voxels.

    :param model: the network (evaluated as is)
    :param dataset: validation samples
    :param offsets: candidate offsets added to the logits (default -3 .. 3 step 0.25)
    :return: (best offset, ``{offset: IoU}`` as strings for the summary); ties go to the
        offset nearest 0
    """
    cand = np.arange(-3.0, 3.001, 0.25) if offsets is None else np.asarray(offsets, float)
    cut = math.log(threshold / (1.0 - threshold))
    counts = np.zeros((len(cand), 3), np.int64)  # tp, fp, fn
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(s, min(len(dataset), s + batch_size))])
            obs = batch['observed'].to(device)
            logits = model(batch['features'].to(device)).float()[obs]
            gt = batch['occupancy'].to(device)[obs]
            for k, off in enumerate(cand):
                pred = logits + float(off) >= cut
                tp = int((pred & gt).sum())
                counts[k] += (tp, int(pred.sum()) - tp, int(gt.sum()) - tp)
    iou = counts[:, 0] / np.maximum(1, counts.sum(axis=1))
    order = sorted(range(len(cand)), key=lambda k: (-iou[k], abs(cand[k])))
    return float(cand[order[0]]), {f'{c:+.2f}': float(v) for c, v in zip(cand, iou)}


def _test_metrics(opts: TrainOptions, model: TemporalOccupancyNet, device: torch.device,
                  logodds_scale: float, weights: LossWeights) -> Dict[str, float]:
    """Score ``model`` on the held-out ``test`` split when the data has one (keys ``test_*``)."""
    if opts.test_samples < 0 or not os.path.isdir(os.path.join(opts.data, 'test')):
        return {}
    try:
        test_set = ShardDataset(opts.data, 'test', opts.seq_len, max_samples=opts.test_samples)
    except DatasetError:
        return {}
    metrics = evaluate(model, test_set, device, opts.batch_size, logodds_scale,
                       loss_weights=weights)
    out = {'test_' + k[4:] if k.startswith('val_') else 'test_' + k: v
           for k, v in metrics.items()}
    tqdm.write('test: ' + ', '.join(f'{k} {v:.4f}' for k, v in out.items()))
    out['test_samples'] = len(test_set)
    return out
