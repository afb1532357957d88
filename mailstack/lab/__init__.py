"""The local container lab of a site: ``mailstack lab up/down`` as library functions.

    from mailstack import lab
    state = lab.up("inventories/branch-office/site.yml")   # network, containers, key, inventory
    state.inventory, state.key, state.client.ip, state.relay("head-office").pinned
    state.secrets_created, state.warnings                   # outside secrets the lab made up
    lab.snapshot(site_file, "applied"); ...; lab.restore(site_file, "applied")
    world = lab.stand_ins(site_file)                        # the relays and the provider
    world.relay_messages("head-office")                     # raw messages the relay kept
    world.relay_auth_attempts("head-office")                # nobody may log in there: []
    world.provider_messages()                               # what the provider took to send
    world.put_provider_message("shop@provider.example", raw, seen=True)
    lab.down(site_file)

The lab stands in for the outside world: a relay container per relay without ``auth`` (the
head office's smarthost) and one provider container for every relay with ``auth`` and every
``fetch`` host (:mod:`mailstack.lab.provider`), each with its own lab CA. Missing outside
secrets of the site (CA certificates, provider passwords) are filled in by
:func:`ensure_outside_secrets` (:mod:`mailstack.lab.outside`).

:func:`plan_lab` is pure (no podman); the rest drives podman through
:mod:`mailstack.container`. See :mod:`mailstack.lab.plan` for the layout and the safety rule.
"""

from mailstack.lab.outside import OutsideReport, OutsideSecret, outside_secrets
from mailstack.lab.plan import LabContainer, LabPlan, fixture_id, plan_lab, relay_name_ok
from mailstack.lab.run import (
    CLIENT_CA_DIR,
    auth_usernames,
    down,
    ensure_outside_secrets,
    prepare_outside_secrets,
    setup,
    stand_ins,
    state,
    up,
)
from mailstack.lab.snapshots import SNAPSHOT_REPO, restore, snapshot, snapshot_image
from mailstack.lab.ssh import ssh_argv
from mailstack.lab.stand_ins import StandIns
from mailstack.lab.state import LabState, render_inventory

__all__ = [
    "CLIENT_CA_DIR",
    "SNAPSHOT_REPO",
    "LabContainer",
    "LabPlan",
    "LabState",
    "OutsideReport",
    "OutsideSecret",
    "StandIns",
    "auth_usernames",
    "down",
    "ensure_outside_secrets",
    "fixture_id",
    "outside_secrets",
    "plan_lab",
    "prepare_outside_secrets",
    "relay_name_ok",
    "render_inventory",
    "restore",
    "setup",
    "snapshot",
    "snapshot_image",
    "ssh_argv",
    "stand_ins",
    "state",
    "up",
]
