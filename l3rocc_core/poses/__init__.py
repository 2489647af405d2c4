"""Pose sources that estimate poses themselves (``pose_source: visual_odometry``).

``visual_odometry`` is the tracking front-end and its state machine; ``bundle_adjustment`` the
local back-end; ``ground_plane`` the metric scale from the ground; ``geometry`` the shared
projection and triangulation.
"""
