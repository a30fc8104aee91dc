"""The public surface is listed once, in ``faultlens_sdk.__all__``, and kept honest."""

from __future__ import annotations

import types

import faultlens_sdk


def test_every_public_name_is_listed_and_every_listed_name_exists() -> None:
    exported = {
        name
        for name, value in vars(faultlens_sdk).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert exported == set(faultlens_sdk.__all__)
    assert sorted(faultlens_sdk.__all__) == faultlens_sdk.__all__
