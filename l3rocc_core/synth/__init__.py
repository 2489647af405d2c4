"""Synthetic dynamic worlds with exact 4D ground truth (``l3rocc synth``).

- :mod:`~l3rocc_core.synth.scene`: seeded procedural scenes (industrial, driving) made of closed
  triangle meshes that move (rigidly or by scaling) over time;
- :mod:`~l3rocc_core.synth.motion`: object motions and camera trajectories;
- :mod:`~l3rocc_core.synth.appearance`: procedural textures, shading, sky, sensor model;
- :mod:`~l3rocc_core.synth.render`: Open3D ray-cast rendering (image + exact depth);
- :mod:`~l3rocc_core.synth.ground_truth`: per-frame occupancy, dynamic and observed masks;
- :mod:`~l3rocc_core.synth.sequence`: sequences and their files (mcap bag, gt.npz, depth.npz);
- :mod:`~l3rocc_core.synth.dataset`: training shards from the geometry pipeline's features;
- :mod:`~l3rocc_core.synth.contact_sheet`: a PNG grid of scenes.
"""
