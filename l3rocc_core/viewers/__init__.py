"""Files for 4D viewers: Rerun recordings (``.rrd``) and ROS 2 MCAP of the node's outputs.

- :mod:`~l3rocc_core.viewers.rerun_log`: ``l3rocc replay --rerun`` and ``l3rocc export
  --rerun`` (rerun-sdk, imported only there: ``pip install -r requirements/viewers.txt``);
- :mod:`~l3rocc_core.viewers.mcap_log`: ``l3rocc replay --mcap`` (rosbags, no rclpy);
- :mod:`~l3rocc_core.viewers.node_outputs`: the points and markers the node publishes, as
  numpy arrays (shared with :mod:`l3rocc_ros.messages`).
"""

import os


class ViewerUnavailable(RuntimeError):
    """A viewer output whose library is not installed."""

    kind = 'missing_dependency'


def check_output_file(path: str, suffix: str) -> str:
    """Check that the file ``path`` can be written, before a long run makes its content.

    Creates the missing parent folders and writes (then removes) a probe file beside ``path``.

    :param path: the output file
    :param suffix: the extension it must have, e.g. ``'.rrd'``
    :return: ``path``
    :raises ValueError: another extension
    :raises OSError: the file cannot be written there (the message says why)
    """
    if not str(path).lower().endswith(suffix):
        raise ValueError(f'{path}: the output file must end in {suffix}')
    if os.path.isdir(path):
        raise IsADirectoryError(f'cannot write {path}: it is a folder')
    parent = os.path.dirname(os.path.abspath(path))
    ancestor = parent
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise NotADirectoryError(f'cannot write {path}: {ancestor} is a file, not a folder')
    probe = os.path.join(parent, '.probe.' + os.path.basename(path))
    try:
        os.makedirs(parent, exist_ok=True)
        with open(probe, 'wb'):
            pass
        os.remove(probe)
    except OSError as exc:
        raise type(exc)(f'cannot write {path}: {exc.strerror or exc}') from exc
    return path
