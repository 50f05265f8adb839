"""Settings: one frozen object, read once at start-up and passed to whoever needs it.

Where a value comes from, lowest precedence first:

1. the defaults below, which suit a single machine (DESIGN.md, "Configuration keys");
2. the TOML file given with ``--config`` (``[section]`` tables of ``key = value``);
3. environment variables ``CALLBRIDGE_<SECTION>_<KEY>``, e.g. ``CALLBRIDGE_SIP_PORT=5070``,
   typed by the field they set (int, float, str, and bool as true/false/1/0/yes/no).

Everything is checked before anything starts: an unknown section or key (also an unknown
``CALLBRIDGE_*`` variable), a value of the wrong type or out of range, raises one
``ConfigError`` whose message starts with the key to fix, e.g.
``sip.port: must be an integer 1..65535, got 'abc'``.

``[trunk] mode`` may be left unset: it then becomes ``"sip"`` when ``[trunk] host`` is given and
``"sandbox"`` (the built-in simulated carrier) when it is not, so an empty config file gives a
server that places calls on loopback. An explicit ``mode = "sip"`` with no host is an error.

Nothing here is a module global that code reads behind the caller's back: ``load_settings``
takes the environment as an argument, and ``Settings`` is passed down explicitly.
"""

import dataclasses
import difflib
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from callbridge import __version__
from callbridge.errors import ConfigError

ENV_PREFIX = "CALLBRIDGE_"

TRANSPORTS = ("udp", "tcp")
TRUNK_MODES = ("sip", "sandbox")
#: How numbers are written in the Request-URI sent to the trunk, for +919876543210:
#: ``e164`` +919876543210, ``national`` 09876543210, ``plain`` 9876543210, ``91`` 919876543210.
NUMBER_FORMATS = ("e164", "national", "plain", "91")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class HttpSettings:
    """``[http]``: the REST API, the softphone page and the recordings it serves."""

    #: Address the HTTP server binds.
    host: str = "127.0.0.1"
    port: int = 8080
    #: Base of the absolute URLs handed out (``recording_url``); stored without a trailing "/".
    public_url: str = "http://127.0.0.1:8080"
    #: Comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: str = ""
    #: PEM certificate chain and private key: serve HTTPS (browsers allow the softphone's
    #: microphone only on https:// pages, or on localhost). Both or neither.
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def trusted_proxy_networks(self) -> tuple[str, ...]:
        return tuple(item.strip() for item in self.trusted_proxies.split(",") if item.strip())


@dataclass(frozen=True)
class SipSettings:
    """``[sip]``: our own SIP endpoint, and the RFC 3261 timer values."""

    #: Address the SIP socket binds.
    host: str = "127.0.0.1"
    port: int = 5060
    transport: str = "udp"
    #: Address written into Via/Contact when behind NAT; empty means ``host``.
    public_host: str = ""
    #: RFC 3261 §17.1.1.1 / Table 4: RTT estimate, seconds. Timer A starts at T1, B is 64*T1.
    t1: float = 0.5
    #: RFC 3261 Table 4: the cap on non-INVITE and 2xx retransmit intervals, seconds.
    t2: float = 4.0
    #: RFC 3261 Table 4: how long a message may linger in the network (Timers I, K), seconds.
    t4: float = 5.0
    #: Value of the User-Agent header on everything we send.
    user_agent: str = f"callbridge/{__version__}"


@dataclass(frozen=True)
class TrunkSettings:
    """``[trunk]``: the carrier's SIP trunk (or the built-in sandbox carrier)."""

    #: "sip" for a real trunk, "sandbox" for the simulated one; resolved at load, never empty.
    mode: str = "sandbox"
    host: str = ""
    port: int = 5060
    transport: str = "udp"
    #: Digest credentials (RFC 3261 §22) used when the trunk answers 401/407.
    username: str = ""
    password: str = field(default="", repr=False)
    #: Expected digest realm; empty accepts the realm the trunk challenges with.
    realm: str = ""
    #: "host[:port]" every request is sent to instead of ``host`` (RFC 3261 §8.1.2); or empty.
    outbound_proxy: str = ""
    #: Seconds between OPTIONS keep-alive pings marking the trunk up/down; 0 disables them.
    options_interval: float = 30.0
    #: One of NUMBER_FORMATS.
    number_format: str = "e164"


@dataclass(frozen=True)
class MediaSettings:
    """``[media]``: the RTP relay's port range and advertised address."""

    #: First RTP port; even, since RTCP takes RTP + 1 (RFC 3550 §11).
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    #: Address written into SDP ``c=`` lines when behind NAT; empty means ``sip.host``.
    public_host: str = ""


@dataclass(frozen=True)
class SoftphoneSettings:
    """``[softphone]``: how browsers reach the softphone's WebRTC media (ICE, RFC 8445)."""

    #: Comma-separated STUN/TURN servers for both ends' ICE (:func:`parse_ice_servers`):
    #: ``stun:host[:port]``, ``turn:user:password@host[:port][?transport=udp|tcp]``.
    ice_servers: str = field(default="", repr=False)  # TURN passwords
    #: IP address to offer browsers as our WebRTC host candidate besides the local ones
    #: (a 1:1 NAT in front of the server); empty: only the local addresses.
    public_host: str = ""


@dataclass(frozen=True)
class IceServer:
    """One STUN/TURN server as WebRTC's ``RTCIceServer`` wants it (W3C WebRTC §4.2.4)."""

    url: str
    username: str | None = None
    credential: str | None = field(default=None, repr=False)


#: scheme : [user : password @] host [: port] [?transport=udp|tcp]
_ICE_URL = re.compile(r"(stuns?|turns?):(?:([^:@\s]+):([^@\s]+)@)?"
                      r"([^:@?\s/]+(?::\d+)?(?:\?transport=(?:udp|tcp))?)")


def parse_ice_servers(text: str) -> tuple[IceServer, ...]:
    """``[softphone] ice_servers`` as servers; ValueError naming the bad item. The credentials
    ride in the URL's user part (RFC 7065's turn: URI has none of its own); STUN takes none."""
    servers = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _ICE_URL.fullmatch(item)
        if match is None:
            raise ValueError(f"not a stun:/turn: URL: {item!r}")
        scheme, user, password, rest = match.groups()
        if scheme.startswith("turn") and user is None:
            raise ValueError(f"a TURN server needs user:password@: {item!r}")
        if scheme.startswith("stun") and (user is not None or "?" in rest):
            raise ValueError(f"a STUN server takes no credentials or transport: {item!r}")
        servers.append(IceServer(f"{scheme}:{rest}", user, password))
    return tuple(servers)


@dataclass(frozen=True)
class StorageSettings:
    """``[storage]``: the database and where recordings are written."""

    database_url: str = "sqlite:///callbridge.db"
    #: Relative paths are relative to the working directory.
    recordings_dir: str = "recordings"


@dataclass(frozen=True)
class CallbacksSettings:
    """``[callbacks]``: status callback delivery (one attempt plus ``retries`` more)."""

    retries: int = 3
    #: Seconds before the first retry; each further retry waits twice as long.
    backoff_base: float = 30.0


@dataclass(frozen=True)
class LogSettings:
    """``[log]``: diagnostics on stderr."""

    #: One of LOG_LEVELS.
    level: str = "info"


@dataclass(frozen=True)
class Settings:
    """Every setting, one frozen section per TOML table."""

    http: HttpSettings = field(default_factory=HttpSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    trunk: TrunkSettings = field(default_factory=TrunkSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    softphone: SoftphoneSettings = field(default_factory=SoftphoneSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    callbacks: CallbacksSettings = field(default_factory=CallbacksSettings)
    log: LogSettings = field(default_factory=LogSettings)


#: Section name -> its dataclass, in file order.
SECTIONS: dict[str, type] = {
    "http": HttpSettings,
    "sip": SipSettings,
    "trunk": TrunkSettings,
    "media": MediaSettings,
    "softphone": SoftphoneSettings,
    "storage": StorageSettings,
    "callbacks": CallbacksSettings,
    "log": LogSettings,
}
#: "section.key" -> the Python type of its value (int, float, bool or str).
FIELD_TYPES: dict[str, type] = {
    f"{section}.{name}": kind
    for section, cls in SECTIONS.items()
    for name, kind in get_type_hints(cls).items()
}
#: Keys whose values ``render_settings`` hides.
SECRET_KEYS = frozenset({"trunk.password"})


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Read, type and check the settings; raise ``ConfigError`` naming the first bad key."""
    values = _from_toml(_read_toml(path)) if path is not None else {}
    values.update(_from_env(environ))
    return _build(values)


# -- where values come from ---------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        # The message ends "(at line N, column M)".
        raise ConfigError(str(path), f"invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "invalid TOML: not UTF-8 text") from None


def _from_toml(document: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for section, table in document.items():
        if section not in SECTIONS:
            raise ConfigError(section, f"unknown section [{section}]{_suggest(section, SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(section, f"must be a table ([{section}]), got {_show(table)}")
        for name, value in table.items():
            key = _known_key(section, name, where=f"{section}.{name}")
            values[key] = _typed(key, value, origin=None)
    return values


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var in sorted(v for v in environ if v.startswith(ENV_PREFIX)):
        section, _, name = var[len(ENV_PREFIX) :].lower().partition("_")
        if section not in SECTIONS:
            hint = f"{_suggest(section, SECTIONS)}; expected {ENV_PREFIX}<SECTION>_<KEY>"
            raise ConfigError(var, f"unknown section {section!r}{hint}")
        key = _known_key(section, name, where=var)
        values[key] = _typed(key, environ[var], origin=var)
    return values


def _known_key(section: str, name: str, where: str) -> str:
    key = f"{section}.{name}"
    if key not in FIELD_TYPES:
        names = [k.partition(".")[2] for k in FIELD_TYPES if k.startswith(section + ".")]
        raise ConfigError(where, f"unknown key {name!r} in [{section}]{_suggest(name, names)}")
    return key


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- typing and checking one value --------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """What a key accepts: ``expect`` completes "must be ..." in the error message."""

    expect: str
    ok: Callable[[Any], bool] = lambda value: True
    normalize: Callable[[Any], Any] = lambda value: value


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_TRUTHY = {"true", "1", "yes"}
_FALSY = {"false", "0", "no"}
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_LINE_BREAK = re.compile(r"[\r\n\x00]")


def _typed(key: str, value: Any, origin: str | None) -> Any:
    """Type ``value`` (from TOML, or text from ``origin``, an environment variable) and check
    it against the key's rule."""
    kind = FIELD_TYPES[key]
    rule = _RULES.get(key, _Rule(_TYPE_NAMES[kind]))
    try:
        typed = parse_env_value(value, kind) if origin else _from_toml_value(value, kind)
    except ValueError:
        raise _invalid(key, f"must be {rule.expect}, got {_show(value)}", origin) from None
    if isinstance(typed, str) and _LINE_BREAK.search(typed):
        raise _invalid(key, "must not contain line breaks", origin)
    typed = rule.normalize(typed)
    if not rule.ok(typed):
        raise _invalid(key, f"must be {rule.expect}, got {_show(value)}", origin)
    return typed


def _invalid(key: str, message: str, origin: str | None) -> ConfigError:
    return ConfigError(key, f"{message} (from {origin})" if origin else message)


def parse_env_value(text: str, kind: type) -> Any:
    """Type an environment variable's text as ``kind``; raise ``ValueError`` if it is not."""
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUTHY or word in _FALSY:
            return word in _TRUTHY
        raise ValueError(text)
    if kind is int:
        return int(text.strip(), 10)
    if kind is float:
        return _finite(float(text))
    return text


def _from_toml_value(value: Any, kind: type) -> Any:
    # bool is a subclass of int in Python, but `port = true` is not a port.
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return _finite(float(value))
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(value)


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise ValueError(number)
    return number


def _show(value: Any) -> str:
    """A value as the operator wrote it, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _between(low: int, high: int) -> _Rule:
    return _Rule(f"an integer {low}..{high}", lambda v: low <= v <= high)


def _one_of(*choices: str, allow_empty: bool = False) -> _Rule:
    accepted = {*choices, ""} if allow_empty else set(choices)
    return _Rule(f"one of {', '.join(choices)}", lambda v: v in accepted, str.lower)


def _seconds(*, zero_ok: bool) -> _Rule:
    if zero_ok:
        return _Rule("a number of seconds >= 0 (0 disables)", lambda v: v >= 0)
    return _Rule("a number of seconds > 0", lambda v: v > 0)


def is_host(text: str) -> bool:
    """A host name, an IPv4 address or an IPv6 address (bare or in brackets)."""
    if ":" in text:
        try:
            ipaddress.IPv6Address(text.removeprefix("[").removesuffix("]"))
        except ValueError:
            return False
        return True
    return bool(_HOST_NAME.fullmatch(text)) and not text.startswith(("-", "."))


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``"host[:port]"`` (``"[v6]:port"`` for IPv6); raise ``ValueError`` if malformed."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port_text(rest.removeprefix(":"), rest.startswith(":"))
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        port = _port_text(rest, True)
    if not host or not is_host(host):
        raise ValueError(text)
    return host, port


def _port_text(text: str, has_colon: bool) -> int:
    if not has_colon or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(text)
    return int(text)


def _is_host_port(text: str) -> bool:
    try:
        split_host_port(text)
    except ValueError:
        return False
    return True


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query


def _are_cidrs(text: str) -> bool:
    for item in text.split(","):
        if item.strip():
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                return False
    return True


def _parses(parse: Callable[[str], Any], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _is_ip(text: str) -> bool:
    return _parses(ipaddress.ip_address, text)


_HOST = _Rule("a host name or IP address", is_host)
_OPTIONAL_HOST = _Rule("empty or a host name or IP address", lambda v: v == "" or is_host(v))
_PORT = _between(1, 65535)
#: Listening ports may be 0: the system picks a free one (tests, `callbridge demo`).
_LISTEN_PORT = _Rule("an integer 0..65535 (0: any free port)", lambda v: 0 <= v <= 65535)
_RULES: dict[str, _Rule] = {
    "http.host": _HOST,
    "http.port": _LISTEN_PORT,
    "http.public_url": _Rule(
        "an http(s) URL such as 'https://calls.example.com'",
        _is_http_url,
        lambda v: v.rstrip("/"),
    ),
    "http.trusted_proxies": _Rule(
        "comma-separated CIDRs such as '10.0.0.0/8, 192.0.2.7/32'", lambda v: _are_cidrs(v)
    ),
    "sip.host": _HOST,
    "sip.port": _LISTEN_PORT,
    "sip.transport": _one_of(*TRANSPORTS),
    "sip.public_host": _OPTIONAL_HOST,
    "sip.t1": _seconds(zero_ok=False),
    "sip.t2": _seconds(zero_ok=False),
    "sip.t4": _seconds(zero_ok=False),
    "sip.user_agent": _Rule("a non-empty string", bool),
    "trunk.mode": _one_of(*TRUNK_MODES, allow_empty=True),
    "trunk.host": _OPTIONAL_HOST,
    "trunk.port": _PORT,
    "trunk.transport": _one_of(*TRANSPORTS),
    "trunk.outbound_proxy": _Rule("empty or host[:port]", lambda v: v == "" or _is_host_port(v)),
    "trunk.options_interval": _seconds(zero_ok=True),
    "trunk.number_format": _one_of(*NUMBER_FORMATS),
    "media.rtp_port_min": _PORT,
    "media.rtp_port_max": _PORT,
    "media.public_host": _OPTIONAL_HOST,
    "softphone.ice_servers": _Rule(
        "comma-separated 'stun:host[:port]' or 'turn:user:password@host[:port]' URLs",
        lambda v: _parses(parse_ice_servers, v),
    ),
    "softphone.public_host": _Rule("empty or an IP address", lambda v: v == "" or _is_ip(v)),
    "storage.database_url": _Rule(
        "a database URL such as 'sqlite:///callbridge.db'", lambda v: "://" in v
    ),
    "storage.recordings_dir": _Rule("a directory path", bool),
    "callbacks.retries": _Rule("an integer >= 0", lambda v: v >= 0),
    "callbacks.backoff_base": _seconds(zero_ok=False),
    "log.level": _one_of(*LOG_LEVELS),
}


# -- assembling, and the checks that span keys --------------------------------------------


def _build(values: Mapping[str, Any]) -> Settings:
    by_section: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in values.items():
        section, _, name = key.partition(".")
        by_section[section][name] = value
    trunk = by_section["trunk"]
    if not trunk.get("mode"):
        trunk["mode"] = "sip" if trunk.get("host") else "sandbox"
    settings = Settings(**{name: SECTIONS[name](**kw) for name, kw in by_section.items()})
    _check_relations(settings)
    return settings


def _check_relations(settings: Settings) -> None:
    sip, media, trunk = settings.sip, settings.media, settings.trunk
    if sip.t1 > sip.t2:
        # RFC 3261 §17.1.2.2: retransmit intervals double from T1 up to T2.
        raise ConfigError("sip.t1", f"must not exceed sip.t2 ({sip.t2:g}), got {sip.t1:g}")
    if media.rtp_port_min % 2:
        # RFC 3550 §11: RTP on an even port, RTCP on the odd port above it.
        raise ConfigError("media.rtp_port_min", f"must be even, got {media.rtp_port_min}")
    if media.rtp_port_min >= media.rtp_port_max:
        raise ConfigError(
            "media.rtp_port_max",
            f"must be greater than media.rtp_port_min ({media.rtp_port_min}), "
            f"got {media.rtp_port_max}",
        )
    if trunk.mode == "sip" and not trunk.host:
        raise ConfigError(
            "trunk.host",
            'must be set when trunk.mode is "sip" (or use trunk.mode = "sandbox")',
        )
    http = settings.http
    if bool(http.tls_cert) != bool(http.tls_key):
        missing = "http.tls_key" if http.tls_cert else "http.tls_cert"
        raise ConfigError(missing, "must be set together with the other of tls_cert/tls_key")
    if _unspecified(sip.host) and not sip.public_host:
        # Via, Contact (RFC 3261 §8.1.1.8) and SDP (media.public_host falls back to it) need
        # an address the far end can reach.
        raise ConfigError("sip.public_host", f"must be set when sip.host is {sip.host}")


def _unspecified(host: str) -> bool:
    """0.0.0.0 or ::, which bind every interface but are no address to hand out."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


# -- showing the effective settings -------------------------------------------------------


def render_settings(settings: Settings) -> str:
    """The settings as TOML, one table per section, with secrets hidden."""
    lines: list[str] = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        values = dataclasses.asdict(getattr(settings, section))
        for name, value in values.items():
            lines.append(f"{name} = {_render_value(f'{section}.{name}', value)}")
        lines.append("")
    return "\n".join(lines)


def _render_value(key: str, value: Any) -> str:
    if key in SECRET_KEYS and value:
        return '"********"  # hidden'
    if key == "storage.database_url":
        value = _hide_url_password(value)
    if key == "softphone.ice_servers":
        value = _TURN_PASSWORD.sub(r"\1********@", value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _toml_string(value)


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_TURN_PASSWORD = re.compile(r"(turns?:[^:@\s,]+:)[^@\s,]+@")


def _hide_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":********@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
