"""The inference modules import only torch, transformers and detoxify (the GPU benchmark's machine has
nothing else), and the stage module does not import torch until it starts."""

from __future__ import annotations

import subprocess
import sys

SERVICE_ONLY = ("chdb", "clickhouse_connect", "fastapi", "pydantic_settings", "sklearn", "prometheus_client")


def loaded_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return {name.split(".")[0] for name in result.stdout.split()}


def test_inference_modules_need_no_service_dependencies() -> None:
    modules = loaded_after(
        "import veil_collector.classify.loader, veil_collector.classify.toxicity, "
        "veil_collector.classify.identity, veil_collector.classify.fairness"
    )
    assert "torch" in modules and "detoxify" in modules
    assert not modules & set(SERVICE_ONLY)


def test_stage_module_defers_torch() -> None:
    modules = loaded_after("import veil_collector.classify.stage")
    assert "prometheus_client" in modules
    assert "torch" not in modules and "transformers" not in modules
