"""The network refiner keeps occupancy only next to observed space (no invented slabs)."""

import torch

from l3rocc_core.config import RefinerConfig
from l3rocc_core.refiner.inference import load_refiner


def test_nothing_occupied_far_from_observed_space():
    torch.manual_seed(0)
    refiner = load_refiner(RefinerConfig(), 'cpu')
    T, C, X, Y, Z = 4, len(refiner.feature_names), 16, 16, 8
    features = torch.randn(T, C, X, Y, Z)
    logodds = torch.full((T, X, Y, Z), 3.0)
    features[:, 0] = 1.0                      # strong occupied evidence everywhere
    observed = torch.zeros(T, X, Y, Z, dtype=torch.bool)
    observed[:, 8, 8, 4] = True               # one observed voxel
    prob = refiner.refine(features, logodds, observed)
    assert prob.shape == (T, X, Y, Z)
    far = torch.ones(X, Y, Z, dtype=torch.bool)
    far[6:11, 6:11, 2:7] = False              # within 2 voxels of the observed one
    assert float(prob[:, far].max()) == 0.0
    assert float(prob[:, 8, 8, 4].min()) > 0.0


def test_support_can_be_switched_off():
    refiner = load_refiner(RefinerConfig(network_support_voxels=-1), 'cpu')
    T, C, X, Y, Z = 2, len(refiner.feature_names), 8, 8, 8
    features = torch.zeros(T, C, X, Y, Z)
    features[:, 0] = 1.0
    observed = torch.zeros(T, X, Y, Z, dtype=torch.bool)
    prob = refiner.refine(features, torch.full((T, X, Y, Z), 3.0), observed)
    assert float(prob.max()) > 0.0


def test_support_is_the_box_dilation_of_the_observed_mask():
    """Shifted boolean ORs along each axis give exactly the (2r+1)^3 box maximum."""
    refiner = load_refiner(RefinerConfig(), 'cpu')
    assert refiner.support_voxels == 2
    torch.manual_seed(1)
    for r, shape in ((2, (3, 9, 7, 6)), (1, (2, 5, 4, 3)), (3, (2, 9, 2, 1))):
        refiner.support_voxels = r
        obs = torch.rand(shape) > 0.9
        expected = torch.nn.functional.max_pool3d(obs.float()[:, None], 2 * r + 1, stride=1,
                                                  padding=r)[:, 0]
        assert torch.equal(refiner.support(obs), expected), (r, shape)
