"""Download, on a machine with a package index, every wheel the offline GPU device lacks.

    .venv/bin/python experiments/gpu/fetch_wheels.py            # into .whl/ (git-ignored)
    .venv/bin/python experiments/gpu/fetch_wheels.py --list     # print the closure, download nothing

The closure starts from the `dependencies` of pyproject.toml and follows each wheel's own
Requires-Dist (markers evaluated for CPython 3.12 on Linux x86_64; extras only where a requirement
names them). A package the device image already holds (DEVICE_HAS) is skipped together with its
own requirements: the image's installation is taken as complete. Every other package is fetched
at the version in PINS (the versions this project is tested with), as a cp312 / manylinux x86_64
or pure-Python wheel; a requirement that needs a package missing from PINS, or a pin that does
not satisfy it, stops the script. Wheels of other names or versions are removed from the folder
(two versions of one package would stop the offline install). .whl/MANIFEST.json records the
bundle: each wheel, its size and who required it, and the skipped packages with their
requirement.

The project itself does not travel as a wheel: its source tree travels anyway, and the device
command puts src/ on PYTHONPATH (see experiments/gpu/README.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ("3.12", "3.12.3")  # the device's python3 (KINDS.md: Python 3.12.3)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
MARKER_ENV = {"python_version": PYTHON[0], "python_full_version": PYTHON[1],
              "implementation_name": "cpython", "implementation_version": PYTHON[1],
              "platform_python_implementation": "CPython", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "platform_release": "", "platform_version": ""}

# The device image's Python packages ("nvidia-h200", KINDS.md "Python packages already there",
# read there on 2026-11-17). Versions are the image's: jax/jaxlib 0.11.2, numpy 2.5.2, ...
DEVICE_HAS = frozenset(canonicalize_name(n) for n in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio
h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())  # noqa: SIM905

# The versions this project is tested with (its CI environment, 2026-12), one per package.
PINS = {
    "gymnasium": "1.4.0", "farama-notifications": "0.0.6",
    "mujoco": "4.0.0", "mujoco-core": "4.0.0", "mujoco-studio": "4.0.0",
    "glfw": "2.11.0", "pyopengl": "3.1.10", "websockets": "17.4",
    "minari": "0.5.4",
    "tyro": "1.0.17", "docstring-parser": "0.18.0", "typeguard": "4.6.1",
}


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The [project] dependencies of pyproject.toml."""
    with open(pyproject, "rb") as f:
        return [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]


def applies(req: Requirement, extras: set[str]) -> bool:
    """Whether `req` (a Requires-Dist line) is needed on the device when its parent is installed
    with `extras` ("" standing for the parent without extras)."""
    return req.marker is None or any(req.marker.evaluate({**MARKER_ENV, "extra": e}) for e in extras)


def wheel_requirements(path: Path) -> list[Requirement]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(name).decode()
    head = text.split("\n\n", 1)[0]
    return [Requirement(line.split(":", 1)[1].strip()) for line in head.splitlines()
            if line.startswith("Requires-Dist:")]


def wheel_in(folder: Path, name: str, version: str) -> Path | None:
    """The wheel of `name`==`version` already in `folder`, if any."""
    for path in folder.glob("*.whl"):
        wname, wversion, _, _ = parse_wheel_filename(path.name)
        if wname == name and str(wversion) == version:
            return path
    return None


def download(folder: Path, name: str, version: str) -> Path:
    """Fetch the cp312 manylinux x86_64 (or pure-Python) wheel of name==version into folder."""
    found = wheel_in(folder, name, version)
    if found:
        return found
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", PYTHON[0], "--implementation", "cp", "--abi", "cp312",
           "--abi", "abi3", "--abi", "none", "-d", str(folder), f"{name}=={version}"]
    for platform in PLATFORMS:
        cmd[-3:-3] = ["--platform", platform]
    subprocess.run(cmd, check=True)
    found = wheel_in(folder, name, version)
    if found is None:
        raise SystemExit(f"pip downloaded no wheel of {name}=={version} into {folder}")
    return found


def closure(roots: list[Requirement], fetch) -> tuple[dict, dict]:
    """Walk the requirements from `roots`. `fetch(name, version) -> wheel path`.

    Returns (bundle {name: {version, path, required_by}}, skipped {name: [requirements]})."""
    bundle, skipped, done_extras = {}, {}, {}
    queue = [(r, "pyproject.toml") for r in roots]
    while queue:
        req, parent = queue.pop(0)
        name = canonicalize_name(req.name)
        if name in DEVICE_HAS:
            skipped.setdefault(name, []).append(f"{req} (from {parent})")
            continue
        if name not in bundle:
            if name not in PINS:
                raise SystemExit(f"{req} (from {parent}) is not on the device and has no pin: "
                                 f"add {name} to PINS in {Path(__file__).name}")
            version = PINS[name]
            if not req.specifier.contains(version, prereleases=True):
                raise SystemExit(f"the pin {name}=={version} does not satisfy {req} (from {parent})")
            bundle[name] = {"version": version, "path": fetch(name, version), "required_by": []}
            done_extras[name] = None
        elif not req.specifier.contains(bundle[name]["version"], prereleases=True):
            raise SystemExit(f"the pin {name}=={bundle[name]['version']} does not satisfy {req} "
                             f"(from {parent})")
        bundle[name]["required_by"].append(f"{req} (from {parent})")
        old, want = done_extras[name], {canonicalize_name(e) for e in req.extras} | {""}
        if old is not None and want <= old:
            continue  # its requirements for these extras were queued already
        for dep in wheel_requirements(bundle[name]["path"]):
            if applies(dep, want) and not (old is not None and applies(dep, old)):
                queue.append((dep, f"{name}=={bundle[name]['version']}"))
        done_extras[name] = (old or set()) | want
    return bundle, skipped


def main(argv: list[str] | None = None) -> int:
    """Fetch the bundle and write its manifest; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", type=Path, default=ROOT / ".whl", help="folder (default .whl/)")
    p.add_argument("--list", action="store_true", help="print the closure; keep the folder as is")
    args = p.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    bundle, skipped = closure(project_requirements(), lambda n, v: download(args.dest, n, v))
    keep = {info["path"].name for info in bundle.values()}
    stale = [w for w in args.dest.glob("*.whl") if w.name not in keep]
    total = sum(info["path"].stat().st_size for info in bundle.values())
    for name, info in sorted(bundle.items()):
        print(f"{name + '==' + info['version']:<28} {info['path'].stat().st_size / 2**20:6.2f} MiB  "
              f"<- {'; '.join(info['required_by'])}")
    print(f"total {len(bundle)} wheels, {total / 2**20:.1f} MiB")
    print("on the device already: " + ", ".join(sorted(skipped)))
    if args.list:
        return 0
    for path in stale:
        print(f"removing {path.name} (not in the bundle)")
        path.unlink()
    manifest = {"python": PYTHON[1], "platforms": PLATFORMS, "total_bytes": total,
                "wheels": [{"name": n, "version": i["version"], "file": i["path"].name,
                            "bytes": i["path"].stat().st_size, "required_by": i["required_by"]}
                           for n, i in sorted(bundle.items())],
                "device_has": {n: r for n, r in sorted(skipped.items())}}
    (args.dest / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.dest / 'MANIFEST.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
