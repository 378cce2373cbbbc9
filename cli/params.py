"""Click parameter types shared by the commands."""

from __future__ import annotations

import math

import click

from rsseg.errors import ConfigError


class FiniteFloat(click.ParamType):
    """A number that must be finite and within ``min``..``max``: ``nan``, ``inf`` and values like
    ``1e308`` pass ``float()`` and Click's FloatRange (NaN compares false with every bound) and then
    fail deep in a run. A bad value is a :class:`~rsseg.errors.ConfigError`, so the command line
    prints one ``error:`` line naming the option and an ``example`` value."""

    name = "float"

    def __init__(self, *, min: float | None = None, max: float | None = None, min_open: bool = False,  # noqa: A002
                 example: str = "1") -> None:
        self.min, self.max, self.min_open, self.example = min, max, min_open, example

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        flag = max((o for o in param.opts if o.startswith("--")), key=len, default=param.opts[0]) if param else "value"
        fix = f"use e.g. {flag} {self.example}"
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"{flag} {value!r} is not a number; {fix}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{flag} {value} is not a finite number; {fix}")
        if self.min is not None and (number <= self.min if self.min_open else number < self.min):
            raise ConfigError(f"{flag} must be {'above' if self.min_open else 'at least'} {self.min:.10g} (got {value}); {fix}")
        if self.max is not None and number > self.max:
            raise ConfigError(f"{flag} {value} is beyond the largest accepted value, {self.max:.10g}; {fix}")
        return number

#: --engine of predict and evaluate
ENGINE_HELP = ("torch, onnx (ONNX Runtime), openvino (OpenVINO; the 'openvino' extra) or auto (on the CPU the fastest "
               "installed of openvino and onnx, else torch). onnx and openvino run on the CPU; a checkpoint is exported "
               "once and cached beside it. Env: RSSEG_ENGINE.")


class SizeWithUnit(click.ParamType):
    """An area (``2m2``, ``8px``) or a length (``0.1m``, ``1px``); a bare number is square metres
    or metres. Parsed by :func:`rsseg.inference.vectorize.parse_area` / ``parse_length`` (the one
    parser, shared with the Python API), so a bad value is the same one-line
    :class:`~rsseg.errors.ConfigError`, naming the option."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = "area" if kind == "area" else "length"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        from rsseg.inference.vectorize import Measure, parse_area, parse_length

        if isinstance(value, Measure):
            return value
        flag = max((o for o in param.opts if o.startswith("--")), key=len, default=param.opts[0]) if param else "value"
        return (parse_area if self.kind == "area" else parse_length)(value, flag)  # type: ignore[arg-type]
