"""ROS parameters of the node, declared from :class:`l3rocc_core.config.PipelineConfig`.

Every field of the configuration dataclasses becomes one parameter with a
``ParameterDescriptor`` (description, range, choices, read-only flag); there is no second list of
names. Changes at run time are validated as a whole with :meth:`PipelineConfig.with_values` and
either applied completely or rejected with the reason.
"""

import array
import sys
import textwrap
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

from l3rocc_core.config import ParamSpec, PipelineConfig
import yaml
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterException)
from rclpy.node import Node
from rclpy.parameter import Parameter

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
          list: ParameterType.PARAMETER_DOUBLE_ARRAY}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Build the ``ParameterDescriptor`` of one configuration field.

    Scalars get a ``FloatingPointRange`` / ``IntegerRange`` (enforced by rclpy itself); lists and
    strings state their bounds or choices in ``additional_constraints`` (enforced by the
    set-parameters callback).

    :param spec: the field's specification from :meth:`PipelineConfig.specs`
    :return: the descriptor (``type`` set, ``dynamic_typing`` off)
    """
    d = ParameterDescriptor(name=spec.name, type=_TYPES[spec.type],
                            description=f'[{spec.stage}] {spec.description}',
                            read_only=spec.read_only)
    constraints = []
    if spec.type is float and (spec.lo is not None or spec.hi is not None):
        lo = float('-inf') if spec.lo is None else float(spec.lo)
        hi = float('inf') if spec.hi is None else float(spec.hi)
        d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
    elif spec.type is int and (spec.lo is not None or spec.hi is not None):
        lo = -2 ** 63 if spec.lo is None else int(spec.lo)
        hi = 2 ** 63 - 1 if spec.hi is None else int(spec.hi)
        d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
    elif spec.type is list:
        constraints.append(f'each value in [{spec.lo}, {spec.hi}]')
    if spec.choices:
        constraints.append('one of: ' + ', '.join(spec.choices))
    if spec.read_only:
        constraints.append('read-only: set it at start-up (parameter file or --ros-args -p)')
    d.additional_constraints = '; '.join(constraints)
    return d


def parameter_value(value: Any) -> Any:
    """Turn an rclpy parameter value into the YAML-like value the configuration checks.

    :param value: ``Parameter.value`` (arrays come as ``array.array`` or lists)
    :return: lists for arrays, the value itself otherwise
    """
    if isinstance(value, (array.array, tuple)):
        return list(value)
    if hasattr(value, 'tolist'):
        return value.tolist()
    return value


class NodeParameters:
    """Declares the pipeline's parameters on a node and keeps the validated configuration.

    :param node: the node to declare the parameters on
    :param on_change: called with ``(old, new)`` configuration after an accepted run-time change
        (from the parameter service thread)
    :param on_reject: called with the reason of every rejected run-time change, whether rclpy's
        descriptor checks (range, type, read-only) or the whole-configuration check refused it
    :raises ValueError: when the start-up values (parameter file, overrides) are invalid; the
        message names every problem
    """

    def __init__(self, node: Node,
                 on_change: Optional[Callable[[PipelineConfig, PipelineConfig], None]] = None,
                 on_reject: Optional[Callable[[str], None]] = None):
        """Declare every parameter, validate the start-up values and install the callbacks."""
        self._node = node
        self._lock = threading.Lock()
        self._on_change = on_change
        self._on_reject = on_reject
        self.specs: Dict[str, ParamSpec] = {s.name: s for s in PipelineConfig.specs()}
        values = {}
        for spec in self.specs.values():
            try:
                p = node.declare_parameter(spec.name, _default(spec), descriptor(spec))
            except InvalidParameterTypeException as exc:
                raise ValueError(f'parameter {spec.name}: {exc} (write floats with a decimal '
                                 'point, e.g. 1.0, and lists as [1.0, 2.0, 3.0])') from exc
            except (InvalidParameterValueException, ParameterException) as exc:
                raise ValueError(f'parameter {spec.name}: {exc}') from exc
            values[spec.name] = parameter_value(p.value)
            if values[spec.name] is None and spec.type is list:
                values[spec.name] = []      # a list parameter declared without a value
        try:
            self._config = PipelineConfig().with_values(values)
        except ValueError as exc:
            raise ValueError(f'invalid l3rocc parameters: {exc}') from exc
        node.add_on_set_parameters_callback(self._validate_and_apply)
        # rclpy's descriptor checks (range, read-only) refuse before the callback above runs;
        # the pre-set hook (Iron and later) sees every request, so every refusal is reported.
        self._pre_set = hasattr(node, 'add_pre_set_parameters_callback')
        if self._pre_set:
            node.add_pre_set_parameters_callback(self._report_rejection)

    def check(self, params: List[Parameter]) -> Optional[str]:
        """Return why setting ``params`` together would be refused, or None when it is valid.

        :param params: the requested parameters (names outside the pipeline are ignored)
        """
        updates = {}
        for p in params:
            if p.name not in self.specs:
                continue
            if p.type_ == Parameter.Type.NOT_SET:
                return f'{p.name} cannot be undeclared'
            if self.specs[p.name].read_only:
                return (f'{p.name} is read-only: set it at start-up (parameter file or '
                        '--ros-args -p)')
            updates[p.name] = parameter_value(p.value)
        if not updates:
            return None
        try:
            self.config.with_values(updates)
        except ValueError as exc:
            return str(exc)
        return None

    def _report_rejection(self, params: List[Parameter]) -> List[Parameter]:
        reason = self.check(params)
        if reason is not None and self._on_reject is not None:
            self._on_reject(reason)
        return params

    @property
    def config(self) -> PipelineConfig:
        """The configuration now in force (replaced as a whole on each accepted change)."""
        with self._lock:
            return self._config

    def _validate_and_apply(self, params: List[Parameter]) -> SetParametersResult:
        """Check the whole configuration that ``params`` would give; apply it or say why not."""
        updates = {}
        for p in params:
            if p.name not in self.specs:
                continue
            if p.type_ == Parameter.Type.NOT_SET:
                return SetParametersResult(successful=False,
                                           reason=f'{p.name} cannot be undeclared')
            updates[p.name] = parameter_value(p.value)
        if not updates:
            return SetParametersResult(successful=True)
        with self._lock:
            old = self._config
            try:
                new = old.with_values(updates)
            except ValueError as exc:
                if not self._pre_set and self._on_reject is not None:
                    self._on_reject(str(exc))
                return SetParametersResult(successful=False, reason=str(exc))
            self._config = new
        self._node.get_logger().info(
            'parameters changed: ' + ', '.join(f'{k}={v!r}' for k, v in updates.items()))
        if self._on_change is not None:
            self._on_change(old, new)
        return SetParametersResult(successful=True)


def _default(spec: ParamSpec) -> Any:
    if spec.type is list:
        # an empty list would be typed as a byte array: declare the type alone (unset = [])
        return [float(v) for v in spec.default] or Parameter.Type.DOUBLE_ARRAY
    return spec.default


def changed_stages(old: PipelineConfig, new: PipelineConfig) -> Sequence[str]:
    """Stages whose values differ between two configurations.

    :return: stage names (``'camera'``, ``'depth'``, ...) in declaration order
    """
    out: List[str] = []
    for spec in PipelineConfig.specs():
        if spec.stage not in out and old.get(spec.name) != new.get(spec.name):
            out.append(spec.stage)
    return out


def parameter_file(config: Optional[PipelineConfig] = None) -> str:
    """Return a commented ROS 2 parameter file (``/**: ros__parameters:``) of ``config``.

    ``config/l3rocc.yaml`` is this text for the defaults; regenerate it after adding a field:
    ``python -m l3rocc_ros.params > config/l3rocc.yaml``.

    :param config: the values to write (default: the dataclass defaults)
    """
    config = config or PipelineConfig()
    lines = ['# l3rocc node parameters and their defaults, generated from l3rocc_core/config.py',
             '# by `python -m l3rocc_ros.params > config/l3rocc.yaml`; a test checks that they',
             '# agree. Read-only parameters are set at start-up only (this file or',
             '# --ros-args -p name:=value); the others can also be changed at run time.',
             '/**:', '  ros__parameters:']
    stage = None
    for spec in config.specs():
        if spec.stage != stage:
            stage = spec.stage
            lines.append(f'    # ---- {stage}')
        notes = []
        if spec.choices:
            notes.append(' | '.join(spec.choices))
        if spec.lo is not None or spec.hi is not None:
            notes.append(f'range [{spec.lo}, {spec.hi}]')
        if spec.read_only:
            notes.append('read-only')
        text = spec.description + (f' ({"; ".join(notes)})' if notes else '')
        lines += textwrap.wrap(text, 95, initial_indent='    # ', subsequent_indent='    #   ')
        value = yaml.safe_dump(config.get(spec.name), default_flow_style=True).strip()
        lines.append(f'    {spec.name}: {value.replace(chr(10) + "...", "").strip()}')
    return '\n'.join(lines) + '\n'


def parameter_table() -> str:
    """Return a Markdown table of every parameter: name, default, range/choices, description.

    ``python -m l3rocc_ros.params --markdown`` prints it (for the README).
    """
    rows = ['| parameter | default | range / choices | description |', '|---|---|---|---|']
    for spec in PipelineConfig.specs():
        if spec.choices:
            admits = ' \\| '.join(f'`{c}`' for c in spec.choices)
        elif spec.lo is not None or spec.hi is not None:
            admits = f'[{spec.lo}, {spec.hi}]'
        else:
            admits = ''
        default = yaml.safe_dump(spec.default, default_flow_style=True).split('\n')[0]
        note = ' (read-only)' if spec.read_only else ''
        rows.append(f'| `{spec.name}` | `{default}` | {admits} | {spec.description}{note} |')
    return '\n'.join(rows) + '\n'


if __name__ == '__main__':
    sys.stdout.write(parameter_table() if '--markdown' in sys.argv[1:] else parameter_file())
