"""The site model: frozen dataclasses, the one source of the site file's shape.

The loader (``load.py``) builds these from YAML and checks types and keys against them;
``schema.py`` derives the published JSON Schema from them. A field's ``metadata`` carries
its documentation (``doc``) and, where a string has a fixed shape, a JSON-Schema
``pattern``. Values keep their source marks in :attr:`Site.marks`, keyed by key path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mailstack.site.marks import Marks


def doc(text: str, **extra: object) -> dict[str, object]:
    """Field metadata: documentation and optional JSON-Schema keywords."""
    return {"doc": text, **extra}


Role = Literal["ldap", "ldap-provider", "ldap-replica", "mta", "imap", "relay"]
PROVIDER_SPELLINGS = ("ldap", "ldap-provider")
"""Two spellings of the directory's provider: ``ldap`` (one server) and ``ldap-provider``."""
Protocol = Literal["imap", "pop3", "submission", "sieve"]
SIZE = "^[0-9]+ *([KMGTkmgt]i?[Bb]?)?$"
"""A size: bytes, or a whole number with a binary unit (500M, 2G); see site/sizes.py."""
RelayTls = Literal["verify", "encrypt", "wrapper"]


@dataclass(frozen=True)
class Host:
    """One server of the site."""

    hostname: str = field(metadata=doc("Fully qualified host name (also Postfix's myhostname)."))
    roles: tuple[Role, ...] = field(
        default=("ldap", "mta", "imap"),
        metadata=doc(
            "What runs here: ldap-provider (or ldap: slapd with the directory), ldap-replica "
            "(slapd, a read-only syncrepl copy of the provider that the host's lookups ask "
            "first), mta (Postfix), imap (Dovecot), relay (the Postfix that carries mail "
            "between the site's mail hosts and to the outside; on a host with mta and imap)."),
    )

    def __post_init__(self) -> None:
        # one name for the provider downstream (the manifest's roles, Ansible's groups)
        object.__setattr__(self, "roles", tuple("ldap" if r in PROVIDER_SPELLINGS else r
                                                for r in self.roles))


@dataclass(frozen=True)
class PasswordPolicy:
    """What slapd's ppolicy overlay demands of a new password (no lockout by failure count:
    Dovecot binds as the user, so guessing would lock real users out)."""

    min_length: int = field(
        default=10, metadata=doc("Shortest password slapd accepts (pwdMinLength).")
    )


@dataclass(frozen=True)
class Ldap:
    """The directory: suffix, schema profile, logging and the admin's own ACL rules."""

    base: str = field(metadata=doc("Suffix of the directory, an RFC 4514 DN (dc=example,dc=org)."))
    schema: Literal["courier", "inetorgperson"] = field(
        default="courier",
        metadata=doc("courier: Courier's authldap schema; inetorgperson: standard schemas only."),
    )
    loglevel: tuple[str, ...] = field(
        default=("stats",), metadata=doc("slapd log levels (olcLogLevel); stats when debugging.")
    )
    password_hash: Literal["ARGON2", "SSHA512", "SSHA256"] = field(
        default="ARGON2",
        metadata=doc("Scheme slapd hashes new passwords with (olcPasswordHash, RFC 3062 changes)."),
    )
    acl: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "The admin's own rules in slapd syntax (to WHAT by WHO ACCESS ...), "
            "placed before the generated least-privilege rules, in order."
        ),
    )
    network: bool | None = field(
        default=None,
        metadata=doc(
            "Serve LDAP on port 389 (StartTLS required for every operation). Default: only "
            "when a host without the ldap role reads the directory; otherwise slapd listens "
            "on ldapi:/// (the host's own socket) alone."
        ),
    )
    root_password: bool = field(
        default=False,
        metadata=doc(
            "Add the entry cn=admin,<base> with the password of the secret ldap/admin, which "
            "may manage the directory, for tools that bind with a password; apply, verify and "
            "the user commands work as root over ldapi (the rootDN) without one."
        ),
    )
    accounts: Literal["site", "directory"] = field(
        default="site",
        metadata=doc(
            "site: the site file owns which accounts exist (apply locks or prunes the others; "
            "`mailstack user` edits the site file too). directory: the directory owns them "
            "(provisioned from elsewhere): apply creates the site's accounts once and never "
            "locks or prunes an account it did not create."
        ),
    )
    locked_mail: Literal["refuse", "accept"] = field(
        default="refuse",
        metadata=doc("Mail to a locked account: refuse (permanent 5.2.1 at RCPT) or accept "
                     "(delivered; the owner still cannot log in)."),
    )
    password_policy: PasswordPolicy = field(
        default_factory=lambda: PasswordPolicy(),
        metadata=doc("slapd's password policy (ppolicy) for every password change."),
    )


@dataclass(frozen=True)
class RelayAuth:
    """SASL credentials for a relay server; the password lives in the secrets folder."""

    user: str = field(metadata=doc("SASL login name at the relay."))
    password_secret: str = field(metadata=doc("Name of the file in the secrets folder."))


@dataclass(frozen=True)
class Relay:
    """A relay server (smarthost) that Postfix hands non-local mail to."""

    host: str = field(metadata=doc("Host name or IP address of the relay."))
    port: int = field(default=25, metadata=doc("TCP port (25, 587, or 465 with tls: wrapper)."))
    tls: RelayTls = field(
        default="verify",
        metadata=doc(
            "verify: STARTTLS, certificate checked; encrypt: STARTTLS, unverified; "
            "wrapper: TLS from the first byte (port 465), certificate checked."
        ),
    )
    tls_name: str | None = field(
        default=None,
        metadata=doc("Name the relay's certificate must carry (required when host is an IP)."),
    )
    ca_secret: str | None = field(
        default=None,
        metadata=doc("Secrets file with the CA certificate that signs the relay's certificate."),
    )
    auth: RelayAuth | None = field(default=None, metadata=doc("SASL credentials, if required."))


@dataclass(frozen=True)
class RelayPolicy:
    """Where non-local mail goes (the wizard's relay mode)."""

    default: str = field(
        metadata=doc("Name of a relay under relays:, or 'direct' for delivery by MX lookup.")
    )


@dataclass(frozen=True)
class Vacation:
    """An automatic reply to every sender (Sieve's vacation extension, RFC 5230)."""

    subject: str = field(metadata=doc("Subject of the reply."))
    text: str = field(metadata=doc("Body of the reply."))
    days: int = field(default=7, metadata=doc("A sender gets one reply in this many days."))


@dataclass(frozen=True)
class Account:
    """A local mailbox and the person who logs in to it."""

    mail: str = field(metadata=doc("The address, also the login name."))
    name: str = field(metadata=doc("Full name (cn)."))
    protocols: tuple[Protocol, ...] = field(
        default=("imap", "pop3", "submission", "sieve"),
        metadata=doc("Services the account may log in to (delivery to it is not a login); "
                     "sieve: ManageSieve (port 4190), where the user edits his own rules."),
    )
    enabled: bool = field(
        default=True,
        metadata=doc("false: locked: refused on every service; mail to it as ldap.locked_mail "
                     "says. The entry and the mailbox are kept."),
    )
    quota: int | str | None = field(
        default=None,
        metadata=doc("Mailbox size limit: bytes or with a unit (500M, 2G); default quota.default; "
                     "none: no limit.", pattern=SIZE),
    )
    aliases: tuple[str, ...] = field(
        default=(), metadata=doc("More local addresses delivered to this mailbox.")
    )
    send_as: tuple[str, ...] = field(
        default=(),
        metadata=doc("Outside addresses the account may send as (e.g. its provider mailbox); "
                     "never delivered locally."),
    )
    password_secret: str | None = field(
        default=None,
        metadata=doc("Secrets file with the initial password (default accounts/<mail>)."),
    )
    vacation: Vacation | None = field(
        default=None,
        metadata=doc("An automatic reply (Sieve vacation, once per sender in `days`), set by the "
                     "site; the user may set his own through ManageSieve instead."),
    )
    mailhost: str | None = field(
        default=None,
        metadata=doc("The host (a key of `hosts`, with the mta and imap roles) that keeps the "
                     "mailbox and logs the account in; default: the only such host. The others "
                     "send its mail there through the relay."),
    )


ROUTE_BOTH = ("a rule on sender and recipient together cannot be expressed in Postfix's maps "
              "(transport_maps looks at the recipient only, sender_dependent_default_transport_"
              "maps at the sender only): write a recipient route or a sender route")


@dataclass(frozen=True)
class Routes:
    """Which relay takes a message, in Postfix's own precedence: recipients, senders, default."""

    recipients: dict[str, str] = field(
        default_factory=dict,
        metadata=doc("Recipient address or @domain -> relay name (wins over everything).",
                     on_mapping=ROUTE_BOTH),
    )
    senders: dict[str, str] = field(
        default_factory=dict,
        metadata=doc("Sender address or @domain -> relay name (wins over the default).",
                     on_mapping=ROUTE_BOTH),
    )


@dataclass(frozen=True)
class Fetch:
    """A remote mailbox collected into a local account."""

    account: str = field(metadata=doc("The local account that receives the messages."))
    protocol: Literal["pop3", "imap"] = field(metadata=doc("pop3 or imap, always over TLS."))
    host: str = field(metadata=doc("The provider's server."))
    user: str = field(metadata=doc("Login name at the provider."))
    password_secret: str = field(metadata=doc("Secrets file with the provider password."))
    port: int | None = field(default=None, metadata=doc("Default 995 (pop3) or 993 (imap)."))
    keep: bool = field(default=True, metadata=doc("Leave the messages at the provider."))
    folders: tuple[str, ...] = field(default=("INBOX",), metadata=doc("IMAP folders to fetch."))
    interval: str = field(default="5m", metadata=doc("Time between polls: 90s, 5m, 1h.",
                                                     pattern="^[1-9][0-9]*[smh]$"))
    ca_secret: str | None = field(
        default=None,
        metadata=doc("Secrets file with the CA that signs the server's certificate "
                     "(default: the system's CAs)."),
    )
    max_message_size: int | None = field(
        default=None,
        metadata=doc("Bytes: a larger message stays at the provider and its account gets one "
                     "notice (default: Postfix's message_size_limit less a margin for what "
                     "delivery adds). At most Postfix's message_size_limit."),
    )


@dataclass(frozen=True)
class Alias:
    """A local address that forwards to accounts or outside addresses."""

    address: str = field(metadata=doc("The local address."))
    to: tuple[str, ...] = field(metadata=doc("Where its mail goes."))


Post = Literal["members", "site", "anyone"]


@dataclass(frozen=True)
class Group:
    """A group of accounts (and other groups): rights on shared folders, and with an address a
    distribution list that reaches every member once, nested groups included."""

    name: str = field(metadata=doc("The group's name (cn; Dovecot's ACL group name).",
                                   pattern="^[a-z0-9][a-z0-9._-]*$"))
    members: tuple[str, ...] = field(
        metadata=doc("Accounts (by address) and other groups (by name); at least one."))
    address: str | None = field(
        default=None,
        metadata=doc("A local address: mail to it reaches every member exactly once."))
    post: Post = field(
        default="site",
        metadata=doc("Who may send to the address: members (logged-in members), site (the "
                     "site's logged-in users) or anyone (also from outside)."),
    )
    send_as: tuple[str, ...] = field(
        default=(),
        metadata=doc("Accounts or groups that may send with the group's address as sender."),
    )


Right = Literal["lookup", "read", "seen", "write", "insert", "post", "expunge", "create",
                "delete", "admin", "file"]


@dataclass(frozen=True)
class SharedFolder:
    """A folder several accounts see under Public/ (or in its owner's mailbox), with rights."""

    name: str = field(metadata=doc("The folder's name, e.g. Invoices (shown as Public/Invoices)."))
    rights: dict[str, tuple[Right, ...]] = field(
        metadata=doc("Account address or group name -> rights: lookup, read, seen, write, "
                     "insert, post, expunge, create, delete, admin, or file (= lookup, read, "
                     "seen, write, insert; see plan/folders.py)."),
    )
    owner: str = field(
        default="public",
        metadata=doc("public (the Public/ namespace) or the account whose folder it is."),
    )
    address: str | None = field(
        default=None,
        metadata=doc("A local address whose mail is filed straight into this folder (and only "
                     "there: a sender cannot choose another folder)."),
    )


SpecialUse = Literal["drafts", "sent", "trash", "junk", "archive"]


@dataclass(frozen=True)
class Folder:
    """A folder every account has (created at first login and subscribed)."""

    name: str = field(metadata=doc("The folder's name as clients show it (UTF-8, e.g. "
                                   "Отправленные)."))
    special_use: SpecialUse | None = field(
        default=None, metadata=doc("Its RFC 6154 role: drafts, sent, trash, junk, archive."))
    retention: str | None = field(
        default=None,
        metadata=doc("Messages older than this are expunged (autoexpunge): 30d, 2w, 12h.",
                     pattern="^[1-9][0-9]*[smhdw]$"),
    )


DEFAULT_FOLDERS = (
    Folder("Drafts", "drafts"), Folder("Sent", "sent"), Folder("Trash", "trash", "30d"),
    Folder("Junk", "junk", "14d"), Folder("Archive", "archive"),
)


@dataclass(frozen=True)
class Sieve:
    """Server-side rules (Pigeonhole): ManageSieve and the site's rules run before the user's."""

    managesieve: bool = field(
        default=True,
        metadata=doc("Offer ManageSieve on port 4190 (STARTTLS; login only after TLS)."))
    spam_header: str | None = field(
        default="X-Spam-Flag",
        metadata=doc("A message with this header set to YES is filed into the junk folder "
                     "(a site-wide rule before the user's); null: no such rule."),
    )
    before: str | None = field(
        default=None,
        metadata=doc("A Sieve script of the site's own, run for every account before the "
                     "user's rules."),
    )


ACME_SERVER = "^https://[^/\\s]+/\\S*$"
"""An ACME directory URL: https://host[:port]/path."""


@dataclass(frozen=True)
class Acme:
    """The ACME CA the public certificates come from (tls.mode: acme), via Debian's certbot."""

    server: str = field(metadata=doc(
        "The CA's ACME directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory "
        "(never a default: the site names its CA).", pattern=ACME_SERVER))
    email: str | None = field(default=None, metadata=doc(
        "Contact address registered with the CA (expiry notices); none: no address."))
    ca_secret: str | None = field(default=None, metadata=doc(
        "Secrets file with the CA certificate that signs the ACME server's own HTTPS "
        "certificate, for a private ACME server (default: the system's CAs)."))


@dataclass(frozen=True)
class Tls:
    """Certificates for every daemon."""

    mode: Literal["internal-ca", "files", "acme"] = field(
        default="internal-ca",
        metadata=doc(
            "internal-ca: `mailstack secrets` makes a site CA and host certificates; "
            "files: the public ports serve your own certificate chain and key (e.g. from a "
            "commercial CA or your company's PKI): put them into the secrets folder as "
            "tls/public/<host>.crt (the host's certificate first, then its intermediates) and "
            "tls/public/<host>.key, and tls/public/ca.crt when the root is not one the system "
            "trusts; the site CA of internal-ca still signs the internal hops (LDAP); "
            "acme: the public ports (SMTP, submission, IMAP, POP3, ManageSieve, HTTPS) serve a "
            "certificate from the ACME CA of tls.acme (certbot, HTTP-01 on port 80), renewed "
            "by certbot's timer; the site CA of internal-ca still signs the internal hops "
            "(LDAP) and serves until the first ACME certificate is there."
        ),
    )
    acme: Acme | None = field(default=None, metadata=doc(
        "The ACME CA (required with mode acme)."))


@dataclass(frozen=True)
class Clients:
    """How mail clients learn their settings without anyone typing a port."""

    serve: bool = field(
        default=False,
        metadata=doc(
            "Serve the settings over HTTPS from the IMAP host (nginx on ports 80 and 443): "
            "Mozilla autoconfig (Thunderbird, The Bat!), Outlook's Autodiscover and a "
            "mobileconfig per address (Apple). The host's certificate then also names "
            "autoconfig.<domain> and autodiscover.<domain>; point those names at the host."
        ),
    )


@dataclass(frozen=True)
class Postfix:
    """Extra Postfix settings merged over the generated ones."""

    main: dict[str, str] = field(
        default_factory=dict, metadata=doc("main.cf parameters; they win over generated values.")
    )


DURATION = "^[1-9][0-9]*[smhdw]$"
"""A duration as fail2ban spells it: 90s, 10m, 1h, 1d, 1w."""


@dataclass(frozen=True)
class Bans:
    """Automatic bans (fail2ban) of addresses that keep failing to log in, per service."""

    max_failures: int = field(
        default=10,
        metadata=doc("Failed logins from one address, within `window`, that ban it "
                     "(fail2ban's maxretry, counted per service)."),
    )
    window: str = field(default="10m", metadata=doc(
        "How far back failures count (findtime): 90s, 10m, 1h, 1d.", pattern=DURATION))
    ban_time: str = field(default="1h", metadata=doc(
        "How long a banned address is refused (bantime): 10m, 1h, 1d, 1w.", pattern=DURATION))
    never: tuple[str, ...] = field(
        default=(),
        metadata=doc("Addresses or networks (CIDR) never banned, e.g. an office's NAT address "
                     "that many people log in from. The site's relays named by IP address "
                     "and loopback are never banned anyway."),
    )


@dataclass(frozen=True)
class Quota:
    """Mailbox size limits (Dovecot's quota plugin)."""

    default: int | str | None = field(
        default=None,
        metadata=doc("Limit for accounts without their own quota: bytes or with a unit (2G); "
                     "none: no limit, and no mailbox size wall anywhere.", pattern=SIZE),
    )
    warning: int = field(
        default=90, metadata=doc("Percent of the quota at which the user gets a warning message.")
    )
    when_full: Literal["defer", "refuse"] = field(
        default="defer",
        metadata=doc("A message that does not fit: defer (temporary error, the sender's server "
                     "retries, nothing bounces unseen) or refuse (permanent, bounced at once)."),
    )


@dataclass(frozen=True)
class Verify:
    """How `mailstack verify` may act on real servers."""

    probe: str | None = field(
        default=None,
        metadata=doc(
            "An account of the site kept for verify's writes: with `verify -i --allow-writes` "
            "mail is sent to and as it, and the directory write check touches its entry only."
        ),
    )


@dataclass(frozen=True)
class Site:
    """A mail site: its domains, hosts, directory, relays and accounts."""

    site: str = field(
        metadata=doc("Short name; the render goes to build/<site>/.", pattern="^[a-z0-9][a-z0-9-]*$")
    )
    domains: tuple[str, ...] = field(metadata=doc("Mail domains whose mailboxes live here."))
    hosts: dict[str, Host] = field(metadata=doc("Servers by short name."))
    ldap: Ldap = field(metadata=doc("The directory."))
    relay: RelayPolicy = field(metadata=doc("Where non-local mail goes."))
    relays: dict[str, Relay] = field(default_factory=dict, metadata=doc("Relay servers by name."))
    accounts: tuple[Account, ...] = field(default=(), metadata=doc("Mailboxes."))
    aliases: tuple[Alias, ...] = field(default=(), metadata=doc("Forwarding addresses."))
    routes: Routes = field(default_factory=Routes, metadata=doc("Relays by recipient and sender."))
    fetch: tuple[Fetch, ...] = field(default=(), metadata=doc("Remote mailboxes to collect."))
    tls: Tls = field(default_factory=Tls, metadata=doc("Certificates."))
    clients: Clients = field(default_factory=Clients,
                             metadata=doc("Mail clients' automatic settings."))
    postfix: Postfix = field(default_factory=Postfix, metadata=doc("Postfix overrides."))
    quota: Quota = field(default_factory=Quota, metadata=doc("Mailbox size limits."))
    verify: Verify = field(default_factory=Verify, metadata=doc("verify's probe account."))
    bans: Bans = field(default_factory=Bans,
                       metadata=doc("Automatic bans of addresses that keep failing to log in."))
    groups: tuple[Group, ...] = field(
        default=(), metadata=doc("Groups of accounts; with an address, distribution lists."))
    shared_folders: tuple[SharedFolder, ...] = field(
        default=(), metadata=doc("Folders shared between accounts, with rights."))
    folders: tuple[Folder, ...] = field(
        default=DEFAULT_FOLDERS,
        metadata=doc("Every account's folders (special-use roles, retention)."))
    sieve: Sieve = field(default_factory=Sieve, metadata=doc("Server-side rules."))
    marks: Marks = field(
        default_factory=Marks, compare=False, repr=False, metadata={"internal": True}
    )
