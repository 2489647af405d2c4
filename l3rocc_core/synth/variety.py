"""More varied synthetic scenes, for training learned depth (``SequenceSpec.variety``).

:func:`diversify` changes a built scene in place: photo textures on part of the surfaces, more
people-, vehicle- and machine-sized moving objects, and other lighting. :func:`mounted_camera`
is a fixed camera at 0.5-4 m height looking 0-50 degrees down (monitoring camera on a pole or a
wall, dash camera). Scenes without ``variety`` are unchanged, seed for seed.
"""

from typing import List

import numpy as np

from l3rocc_core.synth.appearance import Material, palette, random_material
from l3rocc_core.synth.motion import (CameraTrajectory, Oscillate, Spin, StaticCamera, Walk,
                                      pose_xyz_yaw)
from l3rocc_core.synth.scene import (Part, Scene, _car_parts, _person_parts, box, cylinder)

#: camera heights (metres above the ground) and downward pitch (degrees) of mounted cameras
MOUNT_HEIGHT = (0.5, 4.0)
MOUNT_PITCH_DEG = (0.0, 50.0)
_PHOTO_SHARE = 0.5           # share of objects whose material becomes a photo texture
_N_TEXTURES = 1 << 16        # texture indices are drawn from this range (taken modulo the set)


def photo_material(rng: np.random.Generator, like: Material,
                   scale: tuple = (0.25, 1.5)) -> Material:
    """Return a photo-textured material with the palette of ``like``.

    :param scale: (lo, hi) metres per patch, drawn log-uniformly
    """
    lo, hi = scale
    return Material(like.colors, 'photo', float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                    float(rng.uniform(0.05, 0.2)), like.specular, like.shininess,
                    like.offset, int(rng.integers(_N_TEXTURES)))


def diversify(scene: Scene, rng: np.random.Generator) -> Scene:
    """Add photo textures, moving objects and lighting variety to ``scene`` (in place).

    Moving objects stay inside the scene's free regions: the industrial region of interest
    (radius 2.3 m, cameras stand outside it) and the driving street's lanes and sidewalks.

    :param scene: an ``industrial`` or ``driving`` scene
    :param rng: random generator (consumed deterministically)
    :return: ``scene``
    """
    light = scene.light
    light.ambient = float(light.ambient * rng.uniform(0.5, 1.5))
    light.diffuse = float(light.diffuse * rng.uniform(0.4, 1.4))
    elev = np.radians(rng.uniform(15.0, 85.0))
    az = rng.uniform(0.0, 2.0 * np.pi)
    light.direction = np.array([np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az),
                                np.sin(elev)], np.float32)
    tint = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    light.sky_horizon = light.sky_horizon * tint
    light.sky_zenith = light.sky_zenith * tint
    if scene.family == 'industrial':
        _industrial_movers(scene, rng)
    else:
        _street_movers(scene, rng)
    for obj in scene.objects:
        if rng.random() < _PHOTO_SHARE:
            obj.material = photo_material(rng, obj.material)
    return scene


def _colour(rng: np.random.Generator, names: List[str]) -> Material:
    return random_material(rng, palette(str(rng.choice(names))),
                           ('noise', 'stripes', 'checker'), 0.3)


def _industrial_movers(scene: Scene, rng: np.random.Generator) -> None:
    """People, carts with a mast (forklift-sized) and swinging machines in the hall's middle."""
    for i in range(int(rng.integers(1, 5))):
        pts = rng.uniform(-2.1, 2.1, (int(rng.integers(2, 5)), 2))
        scene.add(f'extra_person{i}', _person_parts(rng),
                  _colour(rng, ['blue', 'orange', 'dark', 'green', 'white', 'red']),
                  Walk(pts, float(rng.uniform(0.4, 1.4)), 0.0, float(rng.uniform(0, 10)),
                       float(rng.uniform(0.0, 0.03))))
    for i in range(int(rng.integers(0, 2))):
        length, width = rng.uniform(1.0, 1.6), rng.uniform(0.7, 1.0)
        height = rng.uniform(0.6, 1.0)
        parts: List[Part] = [box(length, width, height, z=height / 2 + 0.12),
                             box(0.12, width * 0.8, rng.uniform(1.6, 2.2), x=length / 2,
                                 z=1.0)]
        parts += [cylinder(0.12, 0.1, x=sx * length * 0.35, y=sy * width / 2, z=0.12,
                           axis='y', resolution=12) for sx in (-1, 1) for sy in (-1, 1)]
        pts = rng.uniform(-1.6, 1.6, (int(rng.integers(2, 4)), 2))
        scene.add(f'extra_cart{i}', parts, _colour(rng, ['yellow', 'orange', 'red']),
                  Walk(pts, float(rng.uniform(0.3, 1.0)), 0.0, float(rng.uniform(0, 10))))
    for i in range(int(rng.integers(0, 3))):
        x, y = rng.uniform(-1.8, 1.8, 2)
        s = rng.uniform(0.2, 0.5)
        z = rng.uniform(0.3, 1.4)
        if rng.random() < 0.5:
            motion = Spin(pose_xyz_yaw(x, y, z, 0.0), float(rng.uniform(0.5, 2.0)),
                          float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.0, 1.5)))
            parts = [box(s * 3, s * 0.4, s * 0.4, x=s * 1.5)]
        else:
            axis = np.array([0.0, 0.0, 1.0]) if rng.random() < 0.5 else np.r_[
                rng.normal(size=2), 0.0]
            motion = Oscillate(pose_xyz_yaw(x, y, z, 0.0), axis / np.linalg.norm(axis),
                               float(rng.uniform(0.1, 0.4)), float(rng.uniform(1.0, 4.0)),
                               float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 1)))
            parts = [box(s, s * rng.uniform(0.6, 1.4), s * rng.uniform(0.6, 1.4))]
        scene.add(f'extra_machine{i}', parts, _colour(rng, ['yellow', 'steel', 'blue']), motion)


def _street_movers(scene: Scene, rng: np.random.Generator) -> None:
    """More pedestrians on the sidewalks and crossings, and cars in the oncoming lane."""
    wr, xc, wc = scene.road
    for i in range(int(rng.integers(1, 6))):
        sy = rng.choice([-1, 1])
        y = sy * (wr + rng.uniform(0.5, 1.3))
        x0 = rng.uniform(-3, 20)
        far = x0 + rng.uniform(3, 12) * rng.choice([-1, 1])
        pts = np.array([[x0, y], [far, y]]) if rng.random() < 0.7 else np.array(
            [[x0, y], [x0 + rng.uniform(-1, 1), -y]])
        scene.add(f'extra_pedestrian{i}', _person_parts(rng),
                  _colour(rng, ['blue', 'orange', 'dark', 'red', 'white', 'green']),
                  Walk(pts, float(rng.uniform(0.8, 1.6)), 0.0, float(rng.uniform(0, 10)),
                       float(rng.uniform(0.0, 0.03))))
    for i in range(int(rng.integers(0, 3))):
        parts, _ = _car_parts(rng)
        a, b = np.array([60.0, wr / 2, 0.0]), np.array([-30.0, wr / 2, 0.0])
        pts = np.array([a[:2], b[:2]])
        scene.add(f'extra_car{i}', parts, _colour(rng, ['red', 'blue', 'white', 'dark']),
                  Walk(pts, float(rng.uniform(3.0, 9.0)), 0.0, float(rng.uniform(0, 90))))


def mounted_camera(scene: Scene, rng: np.random.Generator) -> CameraTrajectory:
    """Return a fixed camera at :data:`MOUNT_HEIGHT` looking :data:`MOUNT_PITCH_DEG` down.

    Industrial: on the free ring around the region of interest (radius 2.7-3.6 m), turned
    towards it. Driving: on a sidewalk in front of the buildings, looking along or across the
    street.

    :return: a :class:`~l3rocc_core.synth.motion.StaticCamera`
    """
    height = float(rng.uniform(*MOUNT_HEIGHT))
    pitch = np.radians(rng.uniform(*MOUNT_PITCH_DEG))
    if scene.family == 'industrial':
        radius, phase = rng.uniform(2.7, 3.6), rng.uniform(0, 2 * np.pi)
        eye = scene.focus[:2] + radius * np.array([np.cos(phase), np.sin(phase)])
        yaw = phase + np.pi + rng.uniform(-0.5, 0.5)
    else:
        wr, xc, wc = scene.road
        side = rng.choice([-1, 1])
        x = rng.uniform(-4.0, xc - wc - 6.0)
        eye = np.array([x, side * (wr + rng.uniform(0.9, 1.3))])
        yaw = rng.uniform(-0.3, 0.3) if rng.random() < 0.6 else -side * rng.uniform(0.4, 1.4)
    forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch),
                        -np.sin(pitch)])
    eye3 = np.r_[eye, height]
    return StaticCamera(eye3, eye3 + forward, float(np.radians(rng.normal(0.0, 2.0))))
