"""Checkpoint files: a pytree as msgpack plus JSON metadata with its sha256 (prefix pairs; run-dir generations)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax.files import atomic_write_bytes, fsync_dir

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


def pending_path(path_prefix: str | os.PathLike) -> str:
    """`<prefix>.json.pending`: the new metadata staged by `save_pytree` before it replaces the msgpack."""
    return _prefix(path_prefix) + ".json.pending"


def encode_pytree(tree: Any, metadata: dict) -> tuple[bytes, bytes]:
    """(msgpack bytes of `tree`, JSON bytes of `metadata` plus the msgpack's sha256).

    Raises ValueError for the reserved key `_checkpoint`, TypeError for metadata that is not
    JSON-serialisable; both before anything is written.
    """
    if _RESERVED in metadata:
        raise ValueError(f"metadata key {_RESERVED!r} is reserved")
    payload = flax.serialization.to_bytes(jax.device_get(tree))
    meta = dict(metadata)
    meta[_RESERVED] = {**_FORMAT, "msgpack_sha256": hashlib.sha256(payload).hexdigest()}
    return payload, json.dumps(meta, indent=2, sort_keys=True).encode("utf-8")


def read_metadata_file(path: str | os.PathLike) -> dict:
    """The full metadata dict (checksum record included) of a JSON file written by this module.

    Raises FileNotFoundError naming a missing file, ValueError for a corrupt or foreign file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint metadata file {path} does not exist; check the path "
                                "(give the prefix without extension) or re-create the checkpoint")
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read())
        info = meta[_RESERVED]
        if info.get("format") != _FORMAT["format"]:
            raise KeyError("format")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"checkpoint metadata file {path} is corrupt or not a mopo_jax checkpoint "
                         f"({type(err).__name__}: {err}); delete it and re-create the checkpoint") from err
    if info.get("version") != _FORMAT["version"]:
        raise ValueError(f"{path} has checkpoint format version {info.get('version')}, this code "
                         f"reads version {_FORMAT['version']}; re-create the checkpoint")
    return meta


def user_metadata(meta: dict) -> dict:
    """`meta` without the checksum record: the dict that was given to the save."""
    return {k: v for k, v in meta.items() if k != _RESERVED}


def payload_matches(meta: dict, payload: bytes) -> bool:
    """Whether `payload` has the sha256 recorded in the full metadata dict `meta`."""
    return hashlib.sha256(payload).hexdigest() == meta[_RESERVED]["msgpack_sha256"]


def decode_pytree(payload: bytes, meta: dict, template: Any, path: str | os.PathLike,
                  meta_path: str | os.PathLike) -> tuple[Any, dict]:
    """(tree with numpy leaves, user metadata) from msgpack bytes read from `path` and the full
    metadata read from `meta_path`; ValueError for a checksum mismatch or a tree that does not
    match `template` (structure, or the first leaf whose shape/dtype differs)."""
    if not payload_matches(meta, payload):
        raise ValueError(f"{path} does not match the checksum in {meta_path} (corrupt, or the two "
                         "files come from different saves); re-create the checkpoint")
    try:
        tree = flax.serialization.from_state_dict(template, flax.serialization.msgpack_restore(payload))
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
    return tree, user_metadata(meta)


def save_pytree(path_prefix: str | os.PathLike, tree: Any, metadata: dict) -> None:
    """Write `tree` to `<prefix>.msgpack` and JSON-serialisable `metadata` to `<prefix>.json`.

    Order: the new JSON (which carries the new msgpack's sha256) is staged atomically as
    `<prefix>.json.pending`, the msgpack is replaced atomically, then the staged file is renamed
    onto `<prefix>.json`. Guarantee: after a kill at any point, `load_pytree` / `load_metadata`
    return the old pair or the new one, never a mix, and never fail because of the kill (a reader
    that finds the msgpack matching the staged checksum uses the staged JSON). Left behind at
    worst: a `*.tmp` file (delete freely) and a stale `.pending` (ignored; the next save replaces it).
    """
    payload, text = encode_pytree(tree, metadata)
    staged = pending_path(path_prefix)
    atomic_write_bytes(staged, text)
    atomic_write_bytes(msgpack_path(path_prefix), payload)
    os.replace(staged, json_path(path_prefix))
    fsync_dir(os.path.dirname(os.path.abspath(staged)))


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _pair_metadata(path_prefix: str | os.PathLike) -> tuple[dict, str]:
    """(full metadata, the file it was read from) of the last completely written pair: the staged
    JSON when the msgpack already matches it (a save killed before its last rename), else the JSON."""
    staged, arrays = pending_path(path_prefix), msgpack_path(path_prefix)
    if os.path.exists(staged) and os.path.exists(arrays):
        try:
            meta = read_metadata_file(staged)
        except ValueError:
            meta = None
        if meta is not None and payload_matches(meta, _read_bytes(arrays)):
            return meta, staged
    return read_metadata_file(json_path(path_prefix)), json_path(path_prefix)


def pair_exists(path_prefix: str | os.PathLike) -> bool:
    """Whether a prefix pair has been completely written at least once (its JSON, or a staged JSON
    that the msgpack matches, exists)."""
    try:
        _pair_metadata(path_prefix)
    except FileNotFoundError:
        return False
    except ValueError:
        return True  # present but unreadable: the load names the problem
    return True


def load_metadata(path_prefix: str | os.PathLike) -> dict:
    """The metadata dict given to `save_pytree` (reads the JSON; the msgpack only after a save that
    was interrupted before its last rename)."""
    return user_metadata(_pair_metadata(path_prefix)[0])


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
    meta, meta_file = _pair_metadata(path_prefix)
    path = msgpack_path(path_prefix)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint array file {path} does not exist (its metadata "
                                f"{meta_file} does); re-create the checkpoint")
    return decode_pytree(_read_bytes(path), meta, template, path, meta_file)


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> Any:
    """`tree` with every typed PRNG key array replaced by its raw uint32 key data (savable)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def keys_from_data(tree: Any, template: Any) -> Any:
    """Inverse of `keys_to_data`: leaves where `template` holds a typed key are wrapped back into
    keys of the same implementation; the other leaves become jnp arrays."""

    def restore(x, t):
        if _is_key(t):
            return jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(t))
        return jnp.asarray(x)

    return jax.tree.map(restore, tree, template)
