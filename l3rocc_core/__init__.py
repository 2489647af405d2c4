"""l3rocc core: monocular 4D occupancy without ROS."""
