"""The l3rocc_node process: start, spin, and a teardown that survives signals at any moment."""

import logging
import os
import sys
import time
from typing import List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation

from l3rocc_ros.memwatch import from_environment, limit_arenas
from l3rocc_ros.node import L3roccNode, STOP_BUDGET_S

RCLError = rclpy_implementation.RCLError
MALLOC_ARENAS = 2  # glibc malloc arenas of the node process (see memwatch.limit_arenas)


#: Python thread switch interval of the node process (seconds; Python's default is 0.005).
GIL_SWITCH_INTERVAL_S = 0.0005


def main(args: Optional[List[str]] = None, fast_exit: bool = True) -> int:
    """Entry point of ``l3rocc_node``: spin the node on a SingleThreadedExecutor until shutdown.

    SIGINT and SIGTERM (rclpy's signal handlers) end the spin; the node is destroyed and rclpy
    shut down in every case. Shutdown waits at most ``STOP_BUDGET_S`` for a frame being
    computed (its result would be discarded anyway).

    Then, with ``fast_exit``, the process ends at once (:func:`exit_now`): the node has left
    the graph, the DDS participant is deleted, logs and output streams are flushed, and nothing
    is left that the interpreter's own teardown would still save, only its slow unloading of
    torch (1-2 s on two busy cores) and the join of a worker thread inside a long frame.

    ``L3ROCC_MEMWATCH=SECONDS`` (and ``L3ROCC_TRACEMALLOC=1``) log memory figures periodically
    (:mod:`l3rocc_ros.memwatch`).

    :param args: command line (default ``sys.argv``)
    :param fast_exit: end the process when done (False: return the status, for in-process use)
    :return: 0 on a clean exit, 1 when the node could not start
    """
    # The worker issues many short torch calls, each giving the GIL back; with the executor's
    # threads busy receiving images, Python's default 5 ms switch interval made every re-acquire
    # wait up to 5 ms (depth took ~10x longer in the node than in replay).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    limit_arenas(MALLOC_ARENAS)   # before rclpy and torch start their threads
    rclpy.init(args=sys.argv if args is None else args)
    node = None
    executor = None
    watch = None
    status = 0
    try:
        node = L3roccNode()
        watch = from_environment()
        executor = SingleThreadedExecutor()   # every callback is short (see the module doc)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        status = 0
    except ValueError as exc:
        rclpy.logging.get_logger('l3rocc').fatal(str(exc))
        status = 1
    except RCLError:
        # A signal that shuts the context down while the executor builds its wait set makes
        # rclpy raise 'the given context is not valid' instead of ExternalShutdownException
        # (seen once in ten SIGTERMs); anything else is a real failure.
        if rclpy.ok():
            raise
        status = 0
    finally:
        stop_start = time.monotonic()
        if watch is not None:
            watch.stop()
        # The signal has shut the context down: a node logger would also try /rosout and
        # print 'Failed to publish log message to rosout'; a logger of its own does not.
        logger = rclpy.logging.get_logger(f'{node.get_name() if node else "l3rocc"}.shutdown')
        if node is not None:
            logger.info('shutting down' + (' (the worker is computing a frame)'
                                           if node.busy else ''))
            node.stop()
        elif status == 0:   # a signal came while the node was being built: it cleaned up
            logger.info('shutting down (during start-up)')
        if executor is not None:
            executor.shutdown(timeout_sec=STOP_BUDGET_S)   # no callback is running: at once
        if node is not None:
            idle = node.destroy_node(STOP_BUDGET_S)
            logger.info(f'stopped in {time.monotonic() - stop_start:.2f} s'
                        + ('' if idle else ' (a frame was still being computed; not waited for)'))
        elif status == 0:
            logger.info(f'stopped in {time.monotonic() - stop_start:.2f} s')
        rclpy.try_shutdown()   # also flushes and closes the ROS log files
    if fast_exit:
        exit_now(status)
    return status


def exit_now(status: int) -> None:
    """End the process with ``status`` at once, after flushing every output buffer.

    Call it only once rclpy is shut down (no node, no executor running). It deletes the DDS
    participant (the default context's handle) so peers see it leave, flushes Python's
    ``logging`` handlers, ``sys.stdout``/``sys.stderr`` and the C library's streams (rcutils
    writes the console log with C stdio), then calls ``os._exit``: the interpreter's teardown
    (unloading torch, joining a worker thread still inside a frame) is skipped. Nothing of the
    node's state needs saving at exit.
    """
    try:
        rclpy.get_default_context().destroy()
    except (RuntimeError, AttributeError) as exc:
        print(f'l3rocc_node: the ROS context was not destroyed: {exc}', file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass   # a closed or broken pipe: nothing more can be written to it anyway
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass   # no C library to flush (not Linux/macOS): Python's streams are flushed above
    os._exit(status)


if __name__ == '__main__':
    sys.exit(main())
