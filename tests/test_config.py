"""Settings: TOML, CALLBRIDGE_* overrides, and a start-up error naming each bad key."""

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from callbridge import __version__
from callbridge.config import (
    FIELD_TYPES,
    IceServer,
    Settings,
    load_settings,
    parse_env_value,
    parse_ice_servers,
    render_settings,
    split_host_port,
)
from callbridge.errors import CallbridgeError, ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "callbridge.example.toml"

LISTEN_PORT = "must be an integer 0..65535 (0: any free port)"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callbridge.toml"
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path, text), environ or {})


# -- defaults and the example file ----------------------------------------------------------


def test_defaults_are_the_design_defaults() -> None:
    s = load_settings(None, {})
    assert s == Settings()
    assert (s.http.host, s.http.port, s.http.public_url) == (
        "127.0.0.1",
        8080,
        "http://127.0.0.1:8080",
    )
    assert (s.sip.port, s.sip.transport, s.sip.t1, s.sip.t2, s.sip.t4) == (5060, "udp", 0.5, 4, 5)
    assert s.sip.user_agent == f"callbridge/{__version__}"
    assert (s.trunk.host, s.trunk.options_interval, s.trunk.number_format) == ("", 30, "e164")
    assert (s.media.rtp_port_min, s.media.rtp_port_max) == (20000, 29999)
    assert s.storage.database_url == "sqlite:///callbridge.db"
    assert (s.callbacks.retries, s.callbacks.backoff_base, s.log.level) == (3, 30, "info")


def test_no_trunk_host_means_the_sandbox_carrier() -> None:
    assert load_settings(None, {}).trunk.mode == "sandbox"


def test_example_file_loads_to_the_defaults() -> None:
    assert load_settings(EXAMPLE, {}) == Settings()


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    written = {
        f"{section}.{key}" for section, table in tomllib.loads(text).items() for key in table
    }
    # user_agent's default carries the version, so the example shows it commented out.
    assert written | {"sip.user_agent"} == set(FIELD_TYPES)
    assert '# user_agent = "callbridge/<version>"' in text


def test_settings_are_frozen() -> None:
    s = load_settings(None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.sip = s.sip  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.sip.port = 5070  # type: ignore[misc]


# -- reading TOML and the environment -------------------------------------------------------


def test_toml_values_are_read(tmp_path: Path) -> None:
    s = load_text(
        tmp_path,
        """
        [http]
        public_url = "https://calls.example.com/"
        [sip]
        port = 5070
        transport = "tcp"
        t1 = 1
        [trunk]
        host = "sip.carrier.example"
        username = "acme"
        outbound_proxy = "sbc.example.net:5080"
        number_format = "91"
        [media]
        rtp_port_min = 30000
        rtp_port_max = 30099
        [log]
        level = "debug"
        """,
    )
    assert (s.sip.port, s.sip.transport) == (5070, "tcp")
    assert s.sip.t1 == 1.0 and isinstance(s.sip.t1, float)
    assert s.http.public_url == "https://calls.example.com"  # no trailing slash to double
    assert (s.trunk.mode, s.trunk.host, s.trunk.username) == ("sip", "sip.carrier.example", "acme")
    assert (s.trunk.outbound_proxy, s.trunk.number_format) == ("sbc.example.net:5080", "91")
    assert (s.media.rtp_port_min, s.media.rtp_port_max, s.log.level) == (30000, 30099, "debug")
    assert s.http.port == 8080  # untouched keys keep their defaults


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    s = load_text(tmp_path, "[sip]\nport = 5080\n", {"CALLBRIDGE_SIP_PORT": "5070"})
    assert s.sip.port == 5070


def test_environment_values_are_typed_by_their_field() -> None:
    s = load_settings(
        None,
        {
            "CALLBRIDGE_SIP_PORT": "5070",
            "CALLBRIDGE_SIP_T2": "8",
            "CALLBRIDGE_TRUNK_OPTIONS_INTERVAL": "2.5",
            "CALLBRIDGE_TRUNK_PASSWORD": "s3cret 42",
            "CALLBRIDGE_MEDIA_RTP_PORT_MIN": "40000",
            "CALLBRIDGE_MEDIA_RTP_PORT_MAX": "40100",
            "PATH": "/usr/bin",  # not ours: ignored
        },
    )
    assert s.sip.port == 5070 and isinstance(s.sip.port, int)
    assert s.sip.t2 == 8.0 and isinstance(s.sip.t2, float)
    assert s.trunk.options_interval == 2.5
    assert s.trunk.password == "s3cret 42"
    assert (s.media.rtp_port_min, s.media.rtp_port_max) == (40000, 40100)


def test_environment_trunk_host_selects_the_sip_trunk() -> None:
    s = load_settings(None, {"CALLBRIDGE_TRUNK_HOST": "10.1.2.3"})
    assert (s.trunk.mode, s.trunk.host) == ("sip", "10.1.2.3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("Yes", True), ("false", False), ("0", False), ("no", False)],
)
def test_env_booleans(text: str, expected: bool) -> None:
    assert parse_env_value(text, bool) is expected


@pytest.mark.parametrize(("text", "kind"), [("maybe", bool), ("5.5", int), ("x", float)])
def test_env_values_of_the_wrong_type_are_refused(text: str, kind: type) -> None:
    with pytest.raises(ValueError):
        parse_env_value(text, kind)


@pytest.mark.parametrize(
    ("toml", "mode", "host"),
    [
        ("", "sandbox", ""),
        ('[trunk]\nmode = ""', "sandbox", ""),
        ('[trunk]\nhost = "sip.example.net"', "sip", "sip.example.net"),
        ('[trunk]\nmode = "sandbox"\nhost = "sip.example.net"', "sandbox", "sip.example.net"),
        ('[trunk]\nmode = "SIP"\nhost = "sip.example.net"', "sip", "sip.example.net"),
    ],
)
def test_trunk_mode_resolution(tmp_path: Path, toml: str, mode: str, host: str) -> None:
    s = load_text(tmp_path, toml)
    assert (s.trunk.mode, s.trunk.host) == (mode, host)


def test_choices_are_case_insensitive(tmp_path: Path) -> None:
    s = load_text(tmp_path, '[sip]\ntransport = "UDP"\n[log]\nlevel = "WARNING"\n')
    assert (s.sip.transport, s.log.level) == ("udp", "warning")


# -- every validation error names its key ---------------------------------------------------

BAD_TOML = [
    ('[sip]\nport = "abc"', "sip.port", LISTEN_PORT + ", got 'abc'"),
    ("[sip]\nport = -1", "sip.port", LISTEN_PORT + ", got -1"),
    ("[http]\nport = 65536", "http.port",
     LISTEN_PORT + ", got 65536"),
    ("[trunk]\nport = 0", "trunk.port", "must be an integer 1..65535, got 0"),
    ("[trunk]\nport = true", "trunk.port", "must be an integer 1..65535, got true"),
    ("[trunk]\nport = 5060.0", "trunk.port", "must be an integer 1..65535, got 5060.0"),
    ('[sip]\ntransport = "sctp"', "sip.transport", "must be one of udp, tcp, got 'sctp'"),
    ('[trunk]\ntransport = "tls"', "trunk.transport", "must be one of udp, tcp, got 'tls'"),
    ('[trunk]\nmode = "pstn"', "trunk.mode", "must be one of sip, sandbox, got 'pstn'"),
    ('[trunk]\nmode = "sip"', "trunk.host", 'must be set when trunk.mode is "sip"'),
    ('[trunk]\nhost = "bad host"', "trunk.host", "must be empty or a host name or IP address"),
    ("[trunk]\nport = 5060\nhost = 5", "trunk.host", "must be empty or a host name or IP"),
    ('[trunk]\nnumber_format = "intl"', "trunk.number_format", "one of e164, national, plain, 91"),
    ('[trunk]\noutbound_proxy = "sbc:99999"', "trunk.outbound_proxy", "empty or host[:port]"),
    ('[trunk]\noutbound_proxy = "sip:sbc:5060"', "trunk.outbound_proxy", "empty or host[:port]"),
    ('[trunk]\noutbound_proxy = "sbc:"', "trunk.outbound_proxy", "empty or host[:port]"),
    ("[trunk]\noptions_interval = -5", "trunk.options_interval", "seconds >= 0 (0 disables)"),
    ("[media]\nrtp_port_min = 20001", "media.rtp_port_min", "must be even, got 20001"),
    (
        "[media]\nrtp_port_min = 30000\nrtp_port_max = 30000",
        "media.rtp_port_max",
        "must be greater than media.rtp_port_min (30000), got 30000",
    ),
    ("[media]\nrtp_port_max = 70000", "media.rtp_port_max", "an integer 1..65535, got 70000"),
    ('[media]\npublic_host = "a/b"', "media.public_host", "empty or a host name or IP address"),
    ('[http]\npublic_url = "ftp://example.com"', "http.public_url", "an http(s) URL"),
    ('[http]\npublic_url = "example.com:8080"', "http.public_url", "an http(s) URL"),
    ('[http]\npublic_url = "https://"', "http.public_url", "an http(s) URL"),
    ('[http]\nhost = ""', "http.host", "must be a host name or IP address, got ''"),
    ("[sip]\nt1 = 0", "sip.t1", "must be a number of seconds > 0, got 0"),
    ("[sip]\nt4 = -1.5", "sip.t4", "must be a number of seconds > 0, got -1.5"),
    ("[sip]\nt1 = nan", "sip.t1", "must be a number of seconds > 0, got nan"),
    ('[sip]\nt2 = "fast"', "sip.t2", "must be a number of seconds > 0, got 'fast'"),
    ("[sip]\nt1 = 5.0\nt2 = 4.0", "sip.t1", "must not exceed sip.t2 (4), got 5"),
    ('[sip]\nuser_agent = ""', "sip.user_agent", "must be a non-empty string"),
    ('[sip]\nuser_agent = "x\\r\\nVia: evil"', "sip.user_agent", "must not contain line breaks"),
    ('[storage]\ndatabase_url = "callbridge.db"', "storage.database_url", "a database URL"),
    ('[storage]\nrecordings_dir = ""', "storage.recordings_dir", "must be a directory path"),
    ("[callbacks]\nretries = -1", "callbacks.retries", "must be an integer >= 0, got -1"),
    ("[callbacks]\nbackoff_base = 0", "callbacks.backoff_base", "seconds > 0, got 0"),
    ('[log]\nlevel = "verbose"', "log.level", "one of debug, info, warning, error"),
    ("[sip]\nprot = 5070", "sip.prot", "unknown key 'prot' in [sip] (did you mean 'port'?)"),
    ("[sip.extra]\nx = 1", "sip.extra", "unknown key 'extra' in [sip]"),
    ("[sipp]\nport = 5070", "sipp", "unknown section [sipp] (did you mean 'sip'?)"),
    ("sip = 5070", "sip", "must be a table ([sip]), got 5070"),
]


@pytest.mark.parametrize(("toml", "key", "message"), BAD_TOML, ids=[c[1] for c in BAD_TOML])
def test_bad_toml_value_names_its_key(tmp_path: Path, toml: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, toml)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert message in caught.value.message


BAD_ENV = [
    ({"CALLBRIDGE_SIP_PORT": "abc"}, "sip.port",
     LISTEN_PORT.removeprefix("must be ") + ", got 'abc'"),
    ({"CALLBRIDGE_SIP_T1": "inf"}, "sip.t1", "a number of seconds > 0, got 'inf'"),
    ({"CALLBRIDGE_TRUNK_MODE": "sip"}, "trunk.host", 'must be set when trunk.mode is "sip"'),
    ({"CALLBRIDGE_FOO_BAR": "1"}, "CALLBRIDGE_FOO_BAR", "unknown section 'foo'"),
    ({"CALLBRIDGE_SIP_PROT": "1"}, "CALLBRIDGE_SIP_PROT", "unknown key 'prot' in [sip]"),
    ({"CALLBRIDGE_SIP": "1"}, "CALLBRIDGE_SIP", "unknown key '' in [sip]"),
]


@pytest.mark.parametrize(("environ", "key", "message"), BAD_ENV, ids=[c[1] for c in BAD_ENV])
def test_bad_environment_names_its_key(environ: dict[str, str], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ)
    assert caught.value.key == key
    assert message in caught.value.message


def test_env_error_names_the_variable_it_came_from() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"CALLBRIDGE_SIP_PORT": "abc"})
    assert str(caught.value) == (
        "sip.port: " + LISTEN_PORT + ", got 'abc' (from CALLBRIDGE_SIP_PORT)"
    )


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[sip]\nport = 5060\nhost 127.0.0.1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert caught.value.key == str(path)
    assert "invalid TOML" in caught.value.message and "line 3" in caught.value.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_settings(path, {})
    assert caught.value.key == str(path)


def test_config_error_is_a_callbridge_error() -> None:
    assert issubclass(ConfigError, CallbridgeError)


# -- host[:port] --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sbc.example.net", ("sbc.example.net", None)),
        ("sbc.example.net:5080", ("sbc.example.net", 5080)),
        ("10.0.0.1:5060", ("10.0.0.1", 5060)),
        ("[2001:db8::1]:5060", ("2001:db8::1", 5060)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["", ":5060", "host:0", "host:x", "2001:db8::1:5060x", "[::1]5"])
def test_split_host_port_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(text)


# -- showing the effective settings --------------------------------------------------------


def test_rendered_settings_load_back_the_same(tmp_path: Path) -> None:
    original = load_settings(
        None,
        {
            "CALLBRIDGE_SIP_PORT": "5070",
            "CALLBRIDGE_SIP_T1": "0.25",
            "CALLBRIDGE_TRUNK_HOST": "sip.example.net",
            "CALLBRIDGE_TRUNK_USERNAME": 'quote"back\\slash',
            "CALLBRIDGE_STORAGE_RECORDINGS_DIR": "/var/lib/callbridge/réc",
        },
    )
    assert load_text(tmp_path, render_settings(original)) == original


def test_rendering_hides_secrets() -> None:
    settings = load_settings(
        None,
        {
            "CALLBRIDGE_TRUNK_PASSWORD": "hunter2",
            "CALLBRIDGE_STORAGE_DATABASE_URL": "postgresql://cb:dbsecret@db.local/cb",
        },
    )
    text = render_settings(settings)
    assert "hunter2" not in text and "dbsecret" not in text
    assert 'database_url = "postgresql://cb:********@db.local/cb"' in text
    assert "hunter2" not in repr(settings)


def test_binding_every_interface_needs_an_address_to_hand_out() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"CALLBRIDGE_SIP_HOST": "0.0.0.0"})
    assert caught.value.key == "sip.public_host"
    settings = load_settings(None, {"CALLBRIDGE_SIP_HOST": "0.0.0.0",
                                    "CALLBRIDGE_SIP_PUBLIC_HOST": "203.0.113.10"})
    assert settings.sip.public_host == "203.0.113.10"


# -- [softphone]: ICE servers and the address offered to browsers ---------------------------


def test_ice_servers_parse_into_stun_and_turn_with_credentials() -> None:
    settings = load_settings(None, {
        "CALLBRIDGE_SOFTPHONE_ICE_SERVERS":
            "stun:stun.example.com:3478, turn:alice:s3:cr=t@turn.example.com:3478?transport=tcp,"
            " turns:bob:pw@203.0.113.5",
        "CALLBRIDGE_SOFTPHONE_PUBLIC_HOST": "203.0.113.10",
    })
    assert parse_ice_servers(settings.softphone.ice_servers) == (
        IceServer("stun:stun.example.com:3478"),
        IceServer("turn:turn.example.com:3478?transport=tcp", "alice", "s3:cr=t"),
        IceServer("turns:203.0.113.5", "bob", "pw"),
    )
    assert settings.softphone.public_host == "203.0.113.10"
    assert parse_ice_servers("") == () and parse_ice_servers(" , ") == ()


@pytest.mark.parametrize("value", [
    "http://stun.example.com",  # not stun:/turn:
    "turn:turn.example.com",  # TURN without credentials
    "stun:u:p@stun.example.com",  # STUN takes none
    "stun:stun.example.com?transport=tcp",
    "turn:u:p@turn.example.com?transport=sctp",
    "stun:stun.example.com:port",
])
def test_bad_ice_servers_are_refused_by_key(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"CALLBRIDGE_SOFTPHONE_ICE_SERVERS": value})
    assert caught.value.key == "softphone.ice_servers"
    with pytest.raises(ValueError, match=re.escape(repr(value))):  # names the bad item
        parse_ice_servers(value)


def test_softphone_public_host_must_be_an_ip_address() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"CALLBRIDGE_SOFTPHONE_PUBLIC_HOST": "calls.example.com"})
    assert caught.value.key == "softphone.public_host"


def test_rendering_hides_turn_passwords() -> None:
    settings = load_settings(None, {"CALLBRIDGE_SOFTPHONE_ICE_SERVERS":
                                    "turn:alice:hunter2@turn.example.com, turns:b:pw2@t.example"})
    text = render_settings(settings)
    assert "hunter2" not in text and "pw2" not in text
    assert 'ice_servers = "turn:alice:********@turn.example.com, turns:b:********@t.example"' \
        in text
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in repr(parse_ice_servers(settings.softphone.ice_servers))
