"""Payload decoders: raw LoRaWAN FRMPayload bytes in, canonical measurements out.

Every vendor module in this package is pure and exposes, at module level:

* ``DECODERS: dict[str, Decoder]`` — decoder key → function
  ``decode(payload: bytes, fport: int) -> dict[str, float | bool]`` whose keys are metric
  names from ``domain.metrics.METRICS`` and values are already in the canonical unit;
* ``DEVICE_MODELS: list[DeviceModelSpec]`` — the products the module reads.

Modules are discovered automatically, so adding a vendor is adding one module.
A decoder signals bad input only by raising ``DecodeError``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

Measurements = dict[str, float | bool]
Decoder = Callable[[bytes, int], Measurements]


class DecodeError(ValueError):
    """The payload cannot be read: says what was wrong and at which byte."""


@dataclass(frozen=True)
class DeviceModelSpec:
    """A sensor product, the decoder that reads it, and what it measures."""

    vendor: str
    model: str
    decoder: str
    kind: str  # climate | bin | parking | other
    meta: dict[str, Any] = field(default_factory=dict)


@cache
def _load() -> tuple[dict[str, Decoder], tuple[DeviceModelSpec, ...]]:
    decoders: dict[str, Decoder] = {}
    models: list[DeviceModelSpec] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for key, decoder in getattr(module, "DECODERS", {}).items():
            if key in decoders:
                raise RuntimeError(f"decoder key {key!r} is defined twice ({info.name})")
            decoders[key] = decoder
        models.extend(getattr(module, "DEVICE_MODELS", []))
    return decoders, tuple(models)


def decoders() -> dict[str, Decoder]:
    """All registered decoders by key."""
    return _load()[0]


def device_models() -> tuple[DeviceModelSpec, ...]:
    """All device models the registered decoders read."""
    return _load()[1]


def get_decoder(key: str) -> Decoder:
    """The decoder registered as `key`; raises DecodeError when there is none."""
    try:
        return decoders()[key]
    except KeyError:
        raise DecodeError(f"no payload decoder is registered as {key!r}") from None
