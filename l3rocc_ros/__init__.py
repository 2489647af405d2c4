"""l3rocc ROS 2 glue: the rclpy node around l3rocc_core."""
