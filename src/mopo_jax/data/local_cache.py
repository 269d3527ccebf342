"""Vetting the local Minari cache before a load uses it: broken folders, official copies whose data
fail the checks, our builds whose inputs changed since."""

from __future__ import annotations

import logging

from mopo_jax import paths
from mopo_jax.data import minari_io, recipes
from mopo_jax.data.flat import DatasetError, load_flat, rebuild_hint

log = logging.getLogger("mopo_jax.data")


def clear_broken(prefixes: list[str], name: str, rebuild: bool) -> None:
    """Log (and under --rebuild remove) local folders of this dataset that hold no readable data."""
    for minari_id in [i for prefix in prefixes for i in minari_io.broken_ids(prefix)]:
        path = paths.minari_dataset_dir(minari_id)
        if rebuild:
            log.warning("--rebuild: removing the broken %s at %s", minari_id, path)
            minari_io.remove_dataset(minari_id)
        else:
            log.warning("ignoring %s at %s: its data file does not open (an interrupted download "
                        "or build?); %s", minari_id, path, rebuild_hint(name))


def drop_bad_official(official: str | None, name: str) -> None:
    """Under --rebuild: remove a local official copy whose data fails to read or check."""
    for minari_id in minari_io.local_ids(official) if official else []:
        try:
            load_flat(minari_id, name)
        except DatasetError as err:
            log.warning("--rebuild: removing %s: %s", minari_id, err)
            minari_io.remove_dataset(minari_id)


def inputs_unchanged(minari_id: str, name: str) -> bool:
    """Whether our local build `minari_id` was made from the inputs present now (logs when not)."""
    changed = recipes.changed_inputs(minari_id, name)
    if changed:
        log.warning("[a] ignoring %s: its inputs changed since it was built: %s; not using it",
                    minari_id, "; ".join(changed))
    return not changed
