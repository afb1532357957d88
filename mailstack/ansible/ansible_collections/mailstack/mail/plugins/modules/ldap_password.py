#!/usr/bin/python
"""Ansible module: set LDAP passwords with RFC 3062 only where a bind shows they are not set."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ldap_password
short_description: Set passwords through the RFC 3062 Password Modify operation, idempotently
description:
  - For each account, a simple bind with the wanted password is tried first over ldapi. When it
    succeeds nothing is done (every set would re-salt the hash, so sets are kept for real need).
  - When it fails with invalidCredentials, the password is set as root over ldapi (SASL EXTERNAL)
    with the Password Modify extended operation; slapd hashes it (olcPasswordHash).
  - "For an account marked O(accounts[].initial) the password is only set while the entry still
    holds O(placeholder): once set, the password is its user's, who may change it. No bind is
    tried for these: none can succeed against the placeholder, and a bind costs a hash
    verification (Argon2) per account and run, where reading userPassword as root costs none."
options:
  uri:
    description: ldapi URI of the local slapd.
    type: str
    default: ldapi://%2Frun%2Fslapd%2Fldapi
  placeholder:
    description: The userPassword value of an entry whose password has never been set.
    type: str
    default: "{CRYPT}!unusable-until-set-by-rfc3062"
  accounts:
    description: The entries and their passwords.
    type: list
    elements: dict
    required: true
    suboptions:
      dn:
        description: The entry.
        type: str
        required: true
      password:
        description: The wanted password.
        type: str
        required: true
      initial:
        description: Only set it while the entry holds O(placeholder) (a user's own account).
        type: bool
        default: false
requirements: [python3-ldap3]
attributes:
  check_mode:
    support: full
author: mailstack
"""

EXAMPLES = r"""
- name: Set the service accounts' passwords
  mailstack.mail.ldap_password:
    accounts:
      - dn: cn=postfix,ou=applications,dc=example,dc=org
        password: "{{ postfix_password }}"
"""

RETURN = r"""
set:
  description: DNs whose password was set.
  type: list
  returned: always
unchanged:
  description: DNs whose password already worked.
  type: list
  returned: always
left_alone:
  description: Initial-only DNs that no longer hold the placeholder (their users' passwords).
  type: list
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.mailstack.mail.plugins.module_utils.ldap import (  # noqa: E402
    HAS_LDAP3,
    INVALID_CREDENTIALS,
    LdapError,
    connect_root,
    describe,
    read_entry,
    simple_bind,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            uri=dict(type="str", default="ldapi://%2Frun%2Fslapd%2Fldapi"),
            placeholder=dict(type="str", default="{CRYPT}!unusable-until-set-by-rfc3062"),
            accounts=dict(type="list", elements="dict", required=True, options=dict(
                dn=dict(type="str", required=True),
                password=dict(type="str", required=True, no_log=True),
                initial=dict(type="bool", default=False),
            )),
        ),
        supports_check_mode=True,
    )
    if not HAS_LDAP3:
        module.fail_json(msg=missing_required_lib("ldap3 (Debian package python3-ldap3)"))
    uri = module.params["uri"]
    placeholder = module.params["placeholder"].encode("utf-8")
    done = {"set": [], "unchanged": [], "left_alone": []}
    root = None
    try:
        for account in module.params["accounts"]:
            dn, password = account["dn"], account["password"]
            if not account["initial"]:
                code = simple_bind(uri, dn, password)
                if code == 0:
                    done["unchanged"].append(dn)
                    continue
                if code != INVALID_CREDENTIALS:
                    raise LdapError(f"{dn}: a simple bind over {uri} failed with result {code}, "
                                    "not with invalidCredentials; not setting its password")
            if root is None:
                root = connect_root(uri)
            entry = read_entry(root, dn, ["userPassword"])
            if entry is None and module.check_mode:
                done["set"].append(dn)  # the tree module would have added it, placeholder and all
                continue
            if entry is None:
                raise LdapError(f"{dn}: no such entry; its password cannot be set")
            if account["initial"] and entry.get("userpassword", ("", []))[1] != [placeholder]:
                # set before, by mailstack or since by its user: the user's now
                done["left_alone"].append(dn)
                continue
            if not module.check_mode:
                result = root.extend.standard.modify_password(dn, None, password)
                if result is False or (root.result or {}).get("result") not in (0, None):
                    raise LdapError(f"{dn}: the Password Modify operation failed: "
                                    f"{describe(root)}")
                if simple_bind(uri, dn, password) != 0:
                    raise LdapError(f"{dn}: the password was set, but a bind with it still fails")
            done["set"].append(dn)
    except LdapError as err:
        module.fail_json(msg=str(err), **done)
    finally:
        if root is not None:
            root.unbind()
    msg = f"set the password of {', '.join(done['set'])}" if done["set"] else "nothing to set"
    result = dict(changed=bool(done["set"]), msg=msg, **done)
    if module._diff and done["set"]:  # which passwords, never their values
        result["diff"] = {"prepared": "".join(
            f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: (secret, set "
            "with RFC 3062)\n-\n\n" for dn in done["set"])}
    module.exit_json(**result)

if __name__ == "__main__":
    main()
