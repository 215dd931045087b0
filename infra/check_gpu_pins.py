"""Ask PyPI which CUDA major version the GPU image's pins depend on: `python infra/check_gpu_pins.py`.

The GPU worker image (infra/docker/worker-gpu.Dockerfile) names one CUDA major, `CUDA_MAJOR`, and
installs PyPI's torch and onnxruntime-gpu with its `cuda`/`cudnn` extras; their CUDA libraries come as
pip packages (nvidia-*, cuda-toolkit). This script reads each pin's wheel metadata from PyPI (pip's
own resolver, `--dry-run --report`: no multi-GB download), names the CUDA major each depends on, and
resolves the whole GPU set together for the image's Python and platform. It exits 1 when a pin's
CUDA major differs from CUDA_MAJOR or from RECORDED, the offline record the tests check against.

Needs the network, so it never runs in the test suite.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
GPU_DOCKERFILE = ROOT / "infra" / "docker" / "worker-gpu.Dockerfile"
# The python:*-slim images (Debian, glibc >= 2.36, x86_64) take any of these wheel tags; pip needs
# them spelled out, as `--platform X` alone accepts only X (cuDNN ships manylinux_2_27 wheels).
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)] + ["manylinux2014_x86_64"]
EXTRAS = {"onnxruntime-gpu": ["cuda", "cudnn"]}

# What PyPI's metadata said when last checked (`python infra/check_gpu_pins.py` prints it):
# pin -> the CUDA major version of the nvidia-*/cuda-* packages it requires on Linux.
RECORDED: dict[str, int] = {
    "torch==2.15.0": 13,  # cuda-toolkit[...]==13.2.2, nvidia-cudnn-cu13==9.26.0.51
    "onnxruntime-gpu==1.31.1": 13,  # [cuda] nvidia-cuda-runtime~=13.0, [cudnn] nvidia-cudnn-cu13~=9.0
}

# Packages whose version (or -cuNN suffix) is the CUDA version itself. Library packages such as
# nvidia-cufft or nvidia-curand carry their own version numbers and say nothing about the major.
CUDA_VERSIONED = re.compile(r"^(cuda-toolkit|cuda-bindings|cuda-python|nvidia-cuda-[a-z-]+)$")
CU_SUFFIX = re.compile(r"-cu(\d+)$")


def dockerfile_args(path: Path = GPU_DOCKERFILE) -> dict[str, str]:
    """ARG name -> default of every `ARG NAME=default` in the Dockerfile."""
    found = re.findall(r"^ARG\s+(\w+)=(\S+)\s*$", path.read_text(), flags=re.MULTILINE)
    return dict(found)


def gpu_pins(args: dict[str, str]) -> list[str]:
    """The CUDA-bearing pins the GPU image installs, as `name==version`."""
    return [f"torch=={args['TORCH_VERSION']}", f"onnxruntime-gpu=={args['ONNXRUNTIME_GPU_VERSION']}"]


def cuda_majors(requires_dist: list[str], extras: list[str], python: str = "3.11") -> dict[str, int]:
    """Requirement -> CUDA major, for the CUDA packages `requires_dist` pulls on Linux with `extras`."""
    majors = {}
    for line in requires_dist:
        req = Requirement(line)
        if req.marker and not _applies(req.marker, extras, python):
            continue
        name = req.name.lower()
        suffix = CU_SUFFIX.search(name)
        if suffix:
            majors[str(req)] = int(suffix.group(1))
        elif CUDA_VERSIONED.match(name) and req.specifier:
            lowest = min(int(s.version.split(".")[0]) for s in req.specifier if s.operator != "<")
            majors[str(req)] = lowest
    return majors


def _applies(marker: Marker, extras: list[str], python: str) -> bool:
    env = {"platform_system": "Linux", "sys_platform": "linux", "python_version": python}
    return any(marker.evaluate({**env, "extra": extra}) for extra in [*extras, ""])


def pip_report(specs: list[str], python: str, no_deps: bool) -> list[dict]:
    """pip's dry-run install report for `specs` on the image's platform (metadata only, no install)."""
    with tempfile.TemporaryDirectory() as target:
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--report", "-", "--only-binary=:all:", "--python-version", python,
            *(f"--platform={p}" for p in PLATFORMS), "--target", target, *(["--no-deps"] if no_deps else []), *specs,
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "pip failed")
    return json.loads(out.stdout)["install"]


def wheel_bytes(url: str) -> int:
    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 (https URLs from pip's report)
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return int(response.headers.get("Content-Length", 0))


def provider_needs(version: str, python: str) -> list[str]:
    """Sonames ONNX Runtime's CUDA provider library needs (downloads the onnxruntime-gpu wheel, ~250 MB)."""
    with tempfile.TemporaryDirectory() as scratch:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--python-version", python, *(f"--platform={p}" for p in PLATFORMS), "-d", scratch,
            f"onnxruntime-gpu=={version}",
        ]  # fmt: skip
        subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
        (wheel,) = Path(scratch).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith("libonnxruntime_providers_cuda.so"))
            library = archive.extract(member, scratch)
        dynamic = subprocess.run(["readelf", "-d", library], capture_output=True, text=True, check=True)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic.stdout)


def provider_problems(args: dict[str, str]) -> list[str]:
    """The CUDA runtime and cuBLAS sonames the provider links name CUDA_MAJOR."""
    needs = provider_needs(args["ONNXRUNTIME_GPU_VERSION"], args["PYTHON_VERSION"])
    print("onnxruntime CUDA provider needs:", ", ".join(needs))
    cuda = [n for n in needs if re.match(r"lib(cudart|cublas|cublasLt)\.so\.\d+$", n)]
    wrong = [n for n in cuda if n.rsplit(".", 1)[1] != args["CUDA_MAJOR"]]
    problems = [f"the CUDA provider links {n}, not CUDA {args['CUDA_MAJOR']}" for n in wrong]
    return problems + ([] if cuda else ["the CUDA provider links no libcudart/libcublas: unexpected layout"])


def check(args: dict[str, str], sizes: bool) -> list[str]:
    """Problems found (empty = every pin names CUDA_MAJOR and the set installs together)."""
    python, want = args["PYTHON_VERSION"], int(args["CUDA_MAJOR"])
    problems = []
    specs = []
    for pin in gpu_pins(args):
        name = pin.split("==")[0]
        extras = EXTRAS.get(name, [])
        spec = f"{name}[{','.join(extras)}]=={pin.split('==')[1]}" if extras else pin
        specs.append(spec)
        (item,) = pip_report([spec], python, no_deps=True)
        majors = cuda_majors(item["metadata"].get("requires_dist", []), extras, python)
        found = set(majors.values())
        print(f"{pin}: {item['download_info']['url'].rsplit('/', 1)[-1]}")
        for req, major in sorted(majors.items()):
            print(f"    CUDA {major}: {req}")
        if found != {want}:
            problems.append(f"{pin} depends on CUDA {sorted(found)}, the image's CUDA_MAJOR is {want}")
        if pin in RECORDED and {RECORDED[pin]} != found:
            problems.append(f"{pin}: RECORDED says CUDA {RECORDED[pin]}, PyPI says {sorted(found)}")
        if pin not in RECORDED:
            problems.append(f"{pin} is not in RECORDED; add it with CUDA {sorted(found)}")
    resolved = pip_report(specs, python, no_deps=False)
    cuda = [i for i in resolved if re.match(r"^(nvidia-|cuda-|triton)", i["metadata"]["name"].lower())]
    print(f"resolved together: {len(resolved)} wheels, of which CUDA/NVIDIA: {len(cuda)}")
    for item in sorted(cuda, key=lambda i: i["metadata"]["name"]):
        print(f"    {item['metadata']['name']}=={item['metadata']['version']}")
    if sizes:
        total = sum(wheel_bytes(i["download_info"]["url"]) for i in resolved)
        cuda_total = sum(wheel_bytes(i["download_info"]["url"]) for i in cuda)
        print(f"wheel bytes (compressed): all {total / 1e9:.2f} GB, CUDA/NVIDIA {cuda_total / 1e9:.2f} GB")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dockerfile", type=Path, default=GPU_DOCKERFILE)
    parser.add_argument("--sizes", action="store_true", help="also sum the wheels' download sizes")
    parser.add_argument(
        "--provider-libs",
        action="store_true",
        help="also download onnxruntime-gpu (~250 MB) and read which CUDA libraries its CUDA provider links",
    )
    options = parser.parse_args(argv)
    if not options.dockerfile.is_file():
        print(f"error: {options.dockerfile} does not exist; pass --dockerfile PATH", file=sys.stderr)
        return 2
    try:
        args = dockerfile_args(options.dockerfile)
        problems = check(args, options.sizes)
        if options.provider_libs:
            problems += provider_problems(args)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: could not ask PyPI ({exc}); check the network and retry", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"MISMATCH: {problem}", file=sys.stderr)
    print("consistent" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
