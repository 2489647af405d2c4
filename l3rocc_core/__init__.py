"""l3rocc core: monocular 4D occupancy without ROS.

Importing the package asks OpenMP threads to sleep rather than spin while they wait
(``OMP_WAIT_POLICY=PASSIVE``, unless the environment already says otherwise): on a robot or a
CI machine the cores are shared, and spinning torch threads there made the plane sweep 3-10x
slower (measured: 2 threads, loaded 2-core machine, 0.7-2.9 s -> 0.22 s per frame). It only takes
effect when torch has not been imported yet.
"""

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
