"""A site host that already runs a mail stack set up by hand (``lab up --start handmade``).

What an admin finds on a server someone set up before mailstack: Debian's Postfix as
"Internet Site" with a hand edit in main.cf, Dovecot with its stock conf.d, and a local user
whose mail lies in /var/mail. Made from the lab image (whose recipe installed those packages)
by removing the image's "prepared for mailstack" marker and delivering a message through the
running Postfix. ``mailstack apply`` must stop before changing anything on such a host and
list what it found; with ``--take-over`` it keeps a dated copy of the configurations and
leaves the mail where it is.
"""

from __future__ import annotations

from mailstack.container import Container
from mailstack.errors import ToolError
from mailstack.lab.plan import LabContainer
from mailstack.plan.layout import HOST_MARKER

USER = "anna"
MBOX = f"/var/mail/{USER}"
SUBJECT = "Written before mailstack came"
BANNER = "$myhostname ESMTP (set up by hand)"

_SETUP = f"""set -eu
rm -f {HOST_MARKER}
id {USER} >/dev/null 2>&1 || useradd --create-home {USER}
postconf -e 'smtpd_banner = {BANNER}'
systemctl reload-or-restart postfix
if [ ! -s {MBOX} ]; then
    printf 'Subject: {SUBJECT}\\n\\nThis mail was here before mailstack.\\n' \\
        | /usr/sbin/sendmail {USER}
fi
for _ in $(seq 100); do [ -s {MBOX} ] && exit 0; sleep 0.2; done
echo "no mail reached {MBOX}" >&2
exit 1
"""


def configure(c: LabContainer) -> None:
    """Make site host ``c`` (a container of the lab image) a hand-made mail server."""
    proc = Container(c.name).exec(["sh", "-c", _SETUP], timeout=120)
    if proc.returncode != 0:
        raise ToolError(f"making {c.name} a hand-made mail server failed: "
                        f"{(proc.stderr or proc.stdout).strip()}")
