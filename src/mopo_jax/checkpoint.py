"""Atomic checkpoint files: a pytree as `<prefix>.msgpack` (flax.serialization) plus `<prefix>.json` metadata.

No pickle. The JSON records the sha256 of the msgpack file it belongs to, so a pair left
inconsistent by an interrupted save is detected on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

import flax.serialization
import jax
import numpy as np

_FORMAT = {"format": "mopo_jax.checkpoint", "version": 1}
_RESERVED = "_checkpoint"


def _prefix(path_prefix: str | os.PathLike) -> str:
    path = os.fspath(path_prefix)
    for suffix in (".msgpack", ".json"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def msgpack_path(path_prefix: str | os.PathLike) -> str:
    """`<prefix>.msgpack` (a trailing .msgpack/.json on the prefix is ignored)."""
    return _prefix(path_prefix) + ".msgpack"


def json_path(path_prefix: str | os.PathLike) -> str:
    """`<prefix>.json` (a trailing .msgpack/.json on the prefix is ignored)."""
    return _prefix(path_prefix) + ".json"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file in the same folder, fsync, then os.replace onto `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_pytree(path_prefix: str | os.PathLike, tree: Any, metadata: dict) -> None:
    """Atomically write `tree` to `<prefix>.msgpack` and JSON-serialisable `metadata` to `<prefix>.json`.

    The msgpack file is written first; the JSON (which carries its sha256) last.
    """
    if _RESERVED in metadata:
        raise ValueError(f"metadata key {_RESERVED!r} is reserved")
    payload = flax.serialization.to_bytes(jax.device_get(tree))
    meta = dict(metadata)
    meta[_RESERVED] = {**_FORMAT, "msgpack_sha256": hashlib.sha256(payload).hexdigest()}
    text = json.dumps(meta, indent=2, sort_keys=True)  # fail before touching files if not JSON-able
    atomic_write_bytes(msgpack_path(path_prefix), payload)
    atomic_write_bytes(json_path(path_prefix), text.encode("utf-8"))


def _read_json(path_prefix: str | os.PathLike) -> dict:
    path = json_path(path_prefix)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint metadata file {path} does not exist; check the path "
                                "(give the prefix without extension) or re-create the checkpoint")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        info = meta[_RESERVED]
        if info.get("format") != _FORMAT["format"]:
            raise KeyError("format")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"checkpoint metadata file {path} is corrupt or not a mopo_jax checkpoint "
                         f"({type(err).__name__}: {err}); delete it and re-create the checkpoint") from err
    if info.get("version") != _FORMAT["version"]:
        raise ValueError(f"{path} has checkpoint format version {info.get('version')}, this code "
                         f"reads version {_FORMAT['version']}; re-create the checkpoint")
    return meta


def load_metadata(path_prefix: str | os.PathLike) -> dict:
    """The metadata dict given to `save_pytree` (reads only `<prefix>.json`)."""
    meta = _read_json(path_prefix)
    meta.pop(_RESERVED)
    return meta


def load_pytree(path_prefix: str | os.PathLike, template: Any) -> tuple[Any, dict]:
    """Read a pytree saved by `save_pytree`, checking it against `template`.

    Args:
      template: a pytree of the expected structure; leaves may be arrays or jax.ShapeDtypeStruct.
    Returns:
      (tree with numpy leaves, metadata dict).
    Raises:
      FileNotFoundError naming a missing file; ValueError for a corrupt file, a msgpack/JSON pair from
      different saves, or a structure/shape/dtype mismatch (naming the first mismatching leaf).
    """
    meta = _read_json(path_prefix)
    path = msgpack_path(path_prefix)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint array file {path} does not exist (its metadata "
                                f"{json_path(path_prefix)} does); re-create the checkpoint")
    with open(path, "rb") as f:
        payload = f.read()
    if hashlib.sha256(payload).hexdigest() != meta[_RESERVED]["msgpack_sha256"]:
        raise ValueError(f"{path} does not match the checksum in {json_path(path_prefix)} (corrupt, "
                         "or the two files come from different saves); re-create the checkpoint")
    try:
        state = flax.serialization.msgpack_restore(payload)
        tree = flax.serialization.from_state_dict(template, state)
    except ValueError as err:
        raise ValueError(f"{path} does not have the expected structure: {err}") from err
    except Exception as err:  # msgpack raises several unrelated exception types on bad bytes
        raise ValueError(f"{path} is corrupt ({type(err).__name__}: {err}); re-create it") from err
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    want = jax.tree_util.tree_flatten_with_path(template)[0]
    if len(got) != len(want):
        raise ValueError(f"{path} has {len(got)} arrays, expected {len(want)}")
    for (key_path, leaf), (_, ref) in zip(got, want):
        leaf = np.asarray(leaf)
        if leaf.shape != tuple(ref.shape) or leaf.dtype != np.dtype(ref.dtype):
            raise ValueError(f"{path}: array {jax.tree_util.keystr(key_path)} has shape {leaf.shape} "
                             f"dtype {leaf.dtype}, expected shape {tuple(ref.shape)} dtype {ref.dtype}")
    meta.pop(_RESERVED)
    return tree, meta


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> Any:
    """`tree` with every typed PRNG key array replaced by its raw uint32 key data (savable)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def keys_from_data(tree: Any, template: Any) -> Any:
    """Inverse of `keys_to_data`: leaves where `template` holds a typed key are wrapped back into
    keys of the same implementation; the other leaves become jnp arrays."""
    import jax.numpy as jnp

    def restore(x, t):
        if _is_key(t):
            return jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(t))
        return jnp.asarray(x)

    return jax.tree.map(restore, tree, template)
