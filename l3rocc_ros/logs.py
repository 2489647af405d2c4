"""Logging of the node: rate-limited problem reports and l3rocc_core's Python logging in rclpy."""

import logging
import math
import threading
import time
from typing import Any, Dict, Tuple

#: A repeated problem of one kind is logged at most once per this many seconds by default.
LOG_PERIOD_S = 3.0


class RateLimitedLog:
    """At most one log line per key and period; suppressed repeats are counted in the next."""

    def __init__(self, logger: Any, period_s: float = LOG_PERIOD_S):
        """Log through ``logger`` (an rclpy logger)."""
        self._logger = logger
        self.period_s = float(period_s)
        self._state: Dict[str, Tuple[float, int]] = {}
        self._lock = threading.Lock()

    def set_period(self, period_s: float) -> None:
        """Use a new period; the next problem of every key is logged at once."""
        with self._lock:
            if float(period_s) != self.period_s:
                self.period_s = float(period_s)
                self._state = {k: (-math.inf, n) for k, (_, n) in self._state.items()}

    def log(self, key: str, text: str, level: str = 'warning') -> bool:
        """Log ``text`` unless ``key`` was logged less than a period ago; return whether logged.

        :param level: 'error', 'warning' or 'info'
        """
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._state.get(key, (-math.inf, 0))
            if now - last < self.period_s:
                self._state[key] = (last, suppressed + 1)
                return False
            self._state[key] = (now, 0)
        if suppressed:
            text += f' ({suppressed} more since the last report)'
        # one call site per severity: rclpy refuses a call site that changes severity
        if level == 'error':
            self._logger.error(text)
        elif level == 'info':
            self._logger.info(text)
        else:
            self._logger.warning(text)
        return True


class RosLogHandler(logging.Handler):
    """Forwards Python ``logging`` records of ``l3rocc_core`` to an rclpy logger."""

    def __init__(self, logger: Any):
        """Forward to ``logger`` (an rclpy logger)."""
        super().__init__(logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        """Log ``record`` at its severity (one call site per severity, as rclpy requires)."""
        text = f'{record.name}: {record.getMessage()}'
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        else:
            self._logger.info(text)
