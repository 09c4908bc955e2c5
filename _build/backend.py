"""Build backend: setuptools, after compiling ``proto/`` with grpcio-tools.

The generated modules land in ``authz/_proto/`` (git-ignored, never edited by hand) for wheels,
sdists and editable installs alike, so ``pip install .`` and ``pip install -e .`` both work from
a clean clone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import build_meta as _orig
from setuptools.build_meta import *  # noqa: F403  (re-export the PEP 517/660 hooks)

ROOT = Path(__file__).resolve().parent.parent


def compile_protos() -> None:
    from grpc_tools import protoc

    out = ROOT / "authz" / "_proto"
    out.mkdir(exist_ok=True)
    protos = sorted((ROOT / "proto").rglob("*.proto"))
    if not protos:
        return
    include = Path(protoc.__file__).parent / "_proto"
    # Map proto/ to the virtual root authz/_proto so generated imports are package-absolute.
    args = [
        "grpc_tools.protoc",
        f"-I{include}",
        f"-Iauthz/_proto={ROOT / 'proto'}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
    ] + [f"authz/_proto/{p.relative_to(ROOT / 'proto')}" for p in protos]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on proto/")
    for d in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()


def bundle_envoy_configs() -> None:
    """Ship deploy/envoy inside the wheel (authz/deploy/envoy) so `jira-authz up` runs the same
    files when installed from a wheel; a checkout reads deploy/ directly."""
    src = ROOT / "deploy" / "envoy"
    dst = ROOT / "authz" / "deploy" / "envoy"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in src.glob("*.yaml"):
        shutil.copy2(f, dst / f.name)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    compile_protos()
    bundle_envoy_configs()
    return _orig.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    compile_protos()
    return _orig.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):  # type: ignore[no-untyped-def]
    return _orig.build_sdist(sdist_directory, config_settings)
