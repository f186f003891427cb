"""EC2's latencies in every process of the test stack (workers, their task processes, triggerer).

tests/cluster/stack.py puts this directory on the stack's PYTHONPATH and sets
GOLDEN_CLUSTER_SLOW_EC2 to SlowEc2's ``looks`` as JSON; Python imports ``sitecustomize`` at start.
Nothing is imported until golden_image.hooks.ami is: then tests.aws.standins.SlowEc2 replaces
``AmiHook.states`` as it does in-process for the dag.test() runs (moto's instances run and its
AMIs are available at once, so without it no wait would ever defer).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
from types import ModuleType
from typing import Any

TARGET = "golden_image.hooks.ami"


class _Setattr:
    """The one method of pytest's MonkeyPatch that SlowEc2.install uses, for good."""

    @staticmethod
    def setattr(owner: Any, name: str, value: Any) -> None:
        setattr(owner, name, value)


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        real_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            real_exec(module)
            from tests.aws.standins import SlowEc2

            SlowEc2(looks=json.loads(os.environ["GOLDEN_CLUSTER_SLOW_EC2"])).install(_Setattr())

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get("GOLDEN_CLUSTER_SLOW_EC2"):
    sys.meta_path.insert(0, _AfterImport())
