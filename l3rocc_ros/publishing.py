"""The node's outputs: ~/occupancy, ~/points, ~/markers (reliable, depth 2) and /diagnostics."""

import time
from typing import Any, Callable, Optional

from diagnostic_msgs.msg import DiagnosticArray
from l3rocc.msg import Occupancy4D as Occupancy4DMsg
from l3rocc_core.config import OutputConfig
from l3rocc_core.occupancy import Occupancy4D
from l3rocc_ros.messages import (MarkerEncoder, occupancy_to_markers, occupancy_to_msg,
                                 occupancy_to_pointcloud2)
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                        reliability=ReliabilityPolicy.RELIABLE)


class OutputPublishers:
    """Creates the node's output publishers and publishes one window's occupancy on them.

    Each output is built only when someone subscribes to it (the sparse window once for the
    message and the cloud).

    :param node: the node that owns the publishers
    :param qos_events: ``qos_events(topic, publisher=True)`` -> event callbacks reporting
        subscribers that request QoS an output does not offer
    """

    def __init__(self, node: Node, qos_events: Callable[..., Any]):
        """Create the four publishers and the marker encoder."""
        self.occupancy = node.create_publisher(
            Occupancy4DMsg, '~/occupancy', OUTPUT_QOS,
            event_callbacks=qos_events('~/occupancy', publisher=True))
        self.points = node.create_publisher(
            PointCloud2, '~/points', OUTPUT_QOS,
            event_callbacks=qos_events('~/points', publisher=True))
        self.markers = node.create_publisher(
            MarkerArray, '~/markers', OUTPUT_QOS,
            event_callbacks=qos_events('~/markers', publisher=True))
        self.diagnostics = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.marker_encoder = MarkerEncoder()
        if not self.marker_encoder.ok:
            node.get_logger().info(
                f'markers built as message objects ({self.marker_encoder.reason})')
        #: milliseconds the last :meth:`publish` took, or None before the first
        self.last_ms: Optional[float] = None

    def publish(self, occ: Occupancy4D, output: OutputConfig) -> None:
        """Publish ``occ`` on every output that has a subscriber.

        :param occ: the window's occupancy
        :param output: the output parameters in force (threshold, markers, history)
        """
        start = time.perf_counter()
        threshold = output.occupancy_threshold
        if occ.threshold != threshold:
            occ = Occupancy4D(occ.grid, occ.stamps_ns, occ.prob, occ.observed, threshold)
        want_occ = self.occupancy.get_subscription_count() > 0
        want_points = self.points.get_subscription_count() > 0
        sparse = occ.sparse_window() if want_occ or want_points else None
        if want_occ:
            self.occupancy.publish(occupancy_to_msg(occ, sparse))
        if want_points:
            self.points.publish(occupancy_to_pointcloud2(occ, sparse))
        if output.publish_markers and self.markers.get_subscription_count():
            self.markers.publish(occupancy_to_markers(occ, output.publish_history,
                                                      self.marker_encoder))
        self.last_ms = (time.perf_counter() - start) * 1e3
