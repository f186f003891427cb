"""Small, valid family specs for tests that need one without a YAML file."""

from __future__ import annotations

from typing import Any

from golden_image import paths
from golden_image.spec import FamilySpec


def family_spec(name: str, **fields: Any) -> FamilySpec:
    """A local-platform family with only the required fields, plus ``fields``."""
    data = {
        "schema_version": 1,
        "name": name,
        "description": "test family",
        "owners": ["tests@example.com"],
        "source": {"local": {}},
        **fields,
    }
    return FamilySpec.model_validate(data, context={"include_dir": paths.include_dir()})
