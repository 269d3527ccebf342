"""Check, before any device time goes to the GPU check, that everything its run needs imports.

    python3 experiments/gpu/check_imports.py        # with PYTHONPATH=<wheels target>:src

Imports mopo_jax's train path (CLI, data, dynamics, run driver, evaluation), gymnasium, mujoco,
minari, tyro and the preinstalled stack; prints each one's version and where it was imported
from; checks that the carried wheels (.whl/MANIFEST.json) are the versions imported, and that the
packages skipped as preinstalled satisfy what the bundle requires of them; makes Hopper-v5 and
steps it once (no rendering); lists JAX's devices. Exits 1 naming every failure.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("numpy", "jax", "jaxlib", "flax", "optax", "chex", "msgpack", "h5py", "tqdm", "mujoco",
           "gymnasium", "minari", "tyro",
           "mopo_jax", "mopo_jax.cli.train_flags", "mopo_jax.cli.train_run", "mopo_jax.cli.dynamics",
           "mopo_jax.cli.data", "mopo_jax.data.load", "mopo_jax.dynamics.io", "mopo_jax.mopo.run",
           "mopo_jax.envs.evaluate")


def _where(module) -> str:
    path = getattr(module, "__file__", None) or "?"
    for prefix in sorted(filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)), key=len,
                         reverse=True):
        if path.startswith(prefix):
            return f"PYTHONPATH {prefix}"
    return str(Path(path).parent)


def check_manifest(problems: list[str]) -> None:
    """Carried wheels must be the versions found; preinstalled ones must meet the requirements."""
    path = ROOT / ".whl" / "MANIFEST.json"
    if not path.exists():
        print(f"(no {path.relative_to(ROOT)}: wheel versions not checked)")
        return
    from packaging.requirements import Requirement

    manifest = json.loads(path.read_text())
    for wheel in manifest["wheels"]:
        try:
            found = metadata.version(wheel["name"])
        except metadata.PackageNotFoundError:
            found = None
        if found != wheel["version"]:
            problems.append(f"{wheel['name']}: carried {wheel['version']}, found {found}")
    for name, reqs in manifest["device_has"].items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: expected on the device, not installed ({reqs[0]})")
            continue
        for text in reqs:
            req = Requirement(text.split(" (from ")[0])
            if not req.specifier.contains(found, prereleases=True):
                problems.append(f"{name} {found} does not satisfy {text}")
    print(f"manifest: {len(manifest['wheels'])} carried wheels and "
          f"{len(manifest['device_has'])} preinstalled packages checked")


def main() -> int:
    """Run every check; returns the exit code."""
    os.environ.setdefault("MUJOCO_GL", "disable")  # nothing renders: no GL library is loaded
    problems: list[str] = []
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    for name in MODULES:
        start = time.perf_counter()
        try:
            module = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 -- report every failure, not just the first
            problems.append(f"import {name}: {type(err).__name__}: {err}")
            continue
        version = getattr(module, "__version__", "") if "." not in name else ""
        print(f"  {name:<28} {version:<10} {time.perf_counter() - start:5.2f} s  {_where(module)}")
    check_manifest(problems)
    try:
        from mopo_jax.envs.make import make_env

        env = make_env("Hopper-v5")
        obs, _ = env.reset(seed=0)
        obs, reward, terminated, _, _ = env.step(env.action_space.sample())
        env.close()
        print(f"Hopper-v5: obs {obs.shape}, one step: reward {float(reward):.3f}, "
              f"terminated {terminated}")
    except Exception as err:  # noqa: BLE001
        problems.append(f"Hopper-v5: {type(err).__name__}: {err}")
    try:
        import jax

        print(f"jax {jax.__version__}: backend {jax.default_backend()}, devices {jax.devices()}")
    except Exception as err:  # noqa: BLE001
        problems.append(f"jax devices: {type(err).__name__}: {err}")
    for problem in problems:
        print(f"FAILED {problem}")
    print("imports: ok" if not problems else f"imports: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
