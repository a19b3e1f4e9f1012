"""The pinned requirement files agree with each other, and the slim images stay slim."""

from __future__ import annotations

from pathlib import Path

REQ = Path(__file__).resolve().parents[2] / "requirements"


def pins(name: str) -> dict[str, str]:
    out = {}
    for line in (REQ / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            package, version = line.split("==")
            out[package.split("[")[0].lower()] = version
    return out


def test_every_file_pins_exact_versions_and_agrees_with_serving():
    serving = pins("serving.txt")
    for name in ("classic.txt", "training.txt", "dev.txt"):
        for package, version in pins(name).items():
            assert serving.get(package, version) == version, (
                f"{name} pins {package}=={version}, serving.txt {serving[package]}"
            )


def test_classic_image_is_a_slim_subset_of_serving():
    classic, serving = pins("classic.txt"), pins("serving.txt")
    assert set(classic) <= set(serving)
    assert not set(classic) & {
        "tensorflow-cpu",
        "xgboost",
        "lightgbm",
        "catboost",
        "ai-edge-litert",
        "onnxruntime",
    }
    assert "tensorflow-cpu" not in serving
