"""The local container lab of a site: ``mailstack lab up/down`` as library functions.

    from mailstack import lab
    state = lab.up("inventories/branch-office/site.yml")   # network, containers, key, inventory
    state.inventory, state.key, state.client.ip, state.relay("head-office").pinned
    lab.snapshot(site_file, "applied"); ...; lab.restore(site_file, "applied")
    lab.relay_messages(site_file, "head-office")            # raw messages the relay kept
    lab.down(site_file)

:func:`plan_lab` is pure (no podman); the rest drives podman through
:mod:`mailstack.container`. See :mod:`mailstack.lab.plan` for the layout and the safety rule.
"""

from mailstack.lab.plan import LabContainer, LabPlan, plan_lab, relay_name_ok
from mailstack.lab.run import (
    SNAPSHOT_REPO,
    clear_relay_messages,
    down,
    relay_log,
    relay_messages,
    restore,
    snapshot,
    snapshot_image,
    ssh_argv,
    state,
    up,
)
from mailstack.lab.state import LabState, render_inventory

__all__ = [
    "SNAPSHOT_REPO",
    "LabContainer",
    "LabPlan",
    "LabState",
    "clear_relay_messages",
    "down",
    "plan_lab",
    "relay_log",
    "relay_messages",
    "relay_name_ok",
    "render_inventory",
    "restore",
    "snapshot",
    "snapshot_image",
    "ssh_argv",
    "state",
    "up",
]
