"""A contact sheet: a grid of rendered frames from several seeded scenes (both families)."""

import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from l3rocc_core.synth.sequence import SequenceSpec, SyntheticSequence

DEFAULT_SHOTS: Tuple[Tuple[str, str, int, float], ...] = (
    ('industrial', 'handheld', 1, 1.0), ('industrial', 'orbit', 2, 3.0),
    ('industrial', 'static', 3, 2.0), ('industrial', 'vehicle', 4, 1.5),
    ('driving', 'vehicle', 1, 1.0), ('driving', 'vehicle', 2, 4.0),
    ('driving', 'pan', 3, 2.0), ('driving', 'static', 4, 3.0),
)


def contact_sheet(path: str, shots: Sequence[Tuple[str, str, int, float]] = DEFAULT_SHOTS,
                  width: int = 480, height: int = 360, columns: int = 4,
                  with_depth: bool = False, progress: Optional[object] = None) -> np.ndarray:
    """Render one frame per shot and tile them into a labelled PNG.

    :param path: output PNG
    :param shots: (family, camera motion, seed, time in seconds) per tile
    :param width: tile width in pixels
    :param height: tile height in pixels
    :param columns: tiles per row
    :param with_depth: add a row of colour-mapped depth under every image row
    :param progress: optional tqdm-like wrapper for the shot iterator
    :return: uint8 [H, W, 3] RGB sheet
    """
    tiles: List[np.ndarray] = []
    depth_tiles: List[np.ndarray] = []
    it = progress(shots) if progress is not None else shots
    for family, motion, seed, t in it:
        spec = SequenceSpec(family, motion, seed, frames=1, fps=15.0, width=width,
                            height=height, start_s=float(t))
        seq = SyntheticSequence(spec, ground_truth=False)
        f = seq.frame(0)
        img = np.ascontiguousarray(f.image)
        label = f'{family} / {motion} / seed {seed}'
        cv2.rectangle(img, (0, 0), (width, 30), (0, 0, 0), -1)
        cv2.putText(img, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                    cv2.LINE_AA)
        tiles.append(img)
        d = f.depth
        inv = np.where(d > 0, 1.0 / np.maximum(d, 1e-3), 0.0)
        vis = cv2.applyColorMap(np.clip(inv / max(inv.max(), 1e-6) * 255, 0, 255).astype(
            np.uint8), cv2.COLORMAP_TURBO)
        depth_tiles.append(cv2.cvtColor(vis, cv2.COLOR_BGR2RGB))
    blank = np.zeros((height, width, 3), np.uint8)
    rows = []
    for r in range(0, len(tiles), columns):
        row = tiles[r:r + columns] + [blank] * (columns - len(tiles[r:r + columns]))
        rows.append(np.concatenate(row, 1))
        if with_depth:
            drow = depth_tiles[r:r + columns]
            drow = drow + [blank] * (columns - len(drow))
            rows.append(np.concatenate(drow, 1))
    sheet = np.concatenate(rows, 0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {path}')
    return sheet
