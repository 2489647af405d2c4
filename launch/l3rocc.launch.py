r"""Launch the l3rocc node (and RViz on request) on a ROS 2 installation (Humble, Jazzy, Kilted).

Example, replaying a bag in simulated time::

    ros2 launch l3rocc l3rocc.launch.py image_topic:=/camera/image_raw \
        camera_info_topic:=/camera/camera_info use_sim_time:=true rviz:=true
    ros2 bag play my_bag --clock

The Fast DDS profile ``config/fastdds_shm.xml`` (8 MiB shared-memory segments, so that full-size
images reach best-effort subscribers) is selected for the processes started here; start the
camera driver with the same FASTDDS_DEFAULT_PROFILES_FILE.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    """Return the launch description: arguments, Fast DDS profile, node, optional RViz."""
    share = get_package_share_directory('l3rocc')
    image_topic = LaunchConfiguration('image_topic')
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    return LaunchDescription([
        DeclareLaunchArgument(
            'image_topic', default_value='/camera/image_raw',
            description='sensor_msgs/Image topic of the camera (image_transport compressed: '
                        'its /compressed sub-topic is used)'),
        DeclareLaunchArgument(
            'camera_info_topic', default_value='/camera/camera_info',
            description='sensor_msgs/CameraInfo topic of the camera'),
        DeclareLaunchArgument(
            'depth_topic', default_value='/camera/depth/image_raw',
            description='registered depth sensor_msgs/Image (16UC1 mm or 32FC1 m), read with '
            'depth_source: topic'),
        DeclareLaunchArgument(
            'params_file', default_value=os.path.join(share, 'config', 'l3rocc.yaml'),
            description='ROS 2 parameter file of the node (default: '
                        'config/l3rocc.yaml of this package)'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false', choices=['true', 'false'],
            description='use /clock (replayed bags: ros2 bag play --clock)'),
        DeclareLaunchArgument(
            'rviz', default_value='false', choices=['true', 'false'],
            description='also start RViz with rviz/l3rocc.rviz'),
        DeclareLaunchArgument(
            'fastdds_profile', default_value=os.path.join(share, 'config', 'fastdds_shm.xml'),
            description='Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE) of the processes '
                        'started here'),
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                               LaunchConfiguration('fastdds_profile')),
        Node(
            package='l3rocc', executable='l3rocc_node', name='l3rocc', output='screen',
            parameters=[LaunchConfiguration('params_file'), {'use_sim_time': use_sim_time}],
            remappings=[
                ('image', image_topic),
                ('image/compressed', [image_topic, '/compressed']),
                ('camera_info', LaunchConfiguration('camera_info_topic')),
                ('depth', LaunchConfiguration('depth_topic')),
            ]),
        Node(
            package='rviz2', executable='rviz2', name='rviz2', output='log',
            arguments=['-d', os.path.join(share, 'rviz', 'l3rocc.rviz')],
            parameters=[{'use_sim_time': use_sim_time}],
            condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
