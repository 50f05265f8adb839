"""Digest authentication, client side (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

A trunk answers an unauthenticated request with 401 (``WWW-Authenticate``) or 407
(``Proxy-Authenticate``); the UAC sends the request again with ``Authorization`` or
``Proxy-Authorization`` and the CSeq number incremented (§22.2, §22.3). :class:`DigestAuth`
drives that exchange as a generator, the shape of httpx's ``DigestAuth.auth_flow``::

    flow = auth.auth_flow(request)
    outgoing = next(flow)                 # the request as given
    outgoing = flow.send(final_response)  # the retry, or StopIteration: report the response

The caller (the user agent) sends each request it gets with a new Via branch; this module
never touches Via. Supported: MD5, SHA-256 and SHA-512-256 with their ``-sess`` variants;
qop ``auth`` and ``auth-int``, and no qop at all (RFC 2069); userhash (RFC 7616 §3.4.4).
Randomness (the cnonce) comes from an injected factory: this package draws none itself.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass

from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import CSeq
from callbridge.sip.message import Request, Response

#: Retries one flow may make, counting stale nonces: enough for a 407 from an outbound proxy,
#: a 401 from the trunk and one stale nonce on each, never a loop with a misbehaving server.
MAX_RETRIES = 4

#: RFC 3261 §22.1: ACK and CANCEL are never challenged (the ACK for a 2xx copies the INVITE's
#: credentials instead, §13.2.2.4), so they are neither retried nor pre-authorised.
_UNCHALLENGED = frozenset({"ACK", "CANCEL"})


# --- algorithms -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Algorithm:
    name: str  #: as written in ``algorithm=`` (RFC 7616 §6.1 registry)
    hash_name: str  #: hashlib's name
    session: bool  #: ``-sess``: A1 also covers the nonce and cnonce (RFC 7616 §3.4.2)
    strength: int  #: ranks the offers when several arrive (RFC 8760 §2.4)

    def hex(self, text: str | bytes) -> str:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return hashlib.new(self.hash_name, data).hexdigest()


def _algorithm_table() -> dict[str, _Algorithm]:
    bases = [("MD5", "md5", 1), ("SHA-256", "sha256", 2)]
    if "sha512_256" in hashlib.algorithms_available:  # OpenSSL builds without it exist
        bases.append(("SHA-512-256", "sha512_256", 3))
    table: dict[str, _Algorithm] = {}
    for name, hash_name, strength in bases:
        for session in (False, True):
            algo = _Algorithm(name + ("-sess" if session else ""), hash_name, session, strength)
            table[algo.name.lower()] = algo  # algorithm names compare case-insensitively
    return table


_ALGORITHMS = _algorithm_table()

#: The algorithms this module answers, by their wire names.
SUPPORTED_ALGORITHMS = tuple(a.name for a in _ALGORITHMS.values())


def _lookup(algorithm: str) -> _Algorithm:
    algo = _ALGORITHMS.get(algorithm.lower())
    if algo is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return algo


# --- the computation --------------------------------------------------------------------------


def digest_response(
    *,
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1): hex digest of
    ``H(A1):nonce:nc:cnonce:qop:H(A2)``, or ``H(A1):nonce:H(A2)`` when there is no qop
    (RFC 2069). ``uri`` is the digest-uri, in SIP the Request-URI. ``username`` is the real
    name even when userhash is in use: only the header field carries the hash (§3.4.4).
    Raises ValueError for an unknown algorithm or qop, or a cnonce missing where needed."""
    algo = _lookup(algorithm)
    if (qop is not None or algo.session) and cnonce is None:
        raise ValueError("a cnonce is required with qop and with -sess algorithms")
    ha1 = algo.hex(f"{username}:{realm}:{password}")
    if algo.session:
        ha1 = algo.hex(f"{ha1}:{nonce}:{cnonce}")
    if qop is None or qop == "auth":
        ha2 = algo.hex(f"{method}:{uri}")
    elif qop == "auth-int":  # A2 covers the body too (RFC 7616 §3.4.3)
        ha2 = algo.hex(f"{method}:{uri}:{algo.hex(body)}")
    else:
        raise ValueError(f"unsupported qop {qop!r}")
    if qop is None:
        return algo.hex(f"{ha1}:{nonce}:{ha2}")
    return algo.hex(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


def hash_username(username: str, realm: str, algorithm: str) -> str:
    """RFC 7616 §3.4.4: the ``username`` sent when the challenge says ``userhash=true``."""
    return _lookup(algorithm).hex(f"{username}:{realm}")


# --- parsing challenges -----------------------------------------------------------------------

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
#: ``name = token / quoted-string`` and what follows it. Unquoted values are read leniently
#: (anything up to whitespace or a comma): some servers send a base64 nonce bare.
_PARAM = re.compile(rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*("(?:[^"\\\r\n]|\\[^\r\n])*"|[^\s,"]+)[ \t]*')
#: A scheme name opening a challenge: a token, whitespace, then ``name=``.
_SCHEME = re.compile(rf"[ \t]*({_TOKEN})[ \t]+(?={_TOKEN}[ \t]*=)")
_SEPARATOR = re.compile(r"[ \t]*,[ \t]*")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _unquote(value: str) -> str:
    if value.startswith('"'):
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    if _CONTROL.search(value):  # we echo realm, nonce and opaque: never a CR/LF
        raise SipParseError(f"control character in auth parameter {value!r}")
    return value


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scan(text: str) -> list[tuple[str, dict[str, str]]]:
    """Split ``Scheme a=1, b="2", Other c=3`` into ``[(scheme, params), ...]``.

    Names are lower-cased; values unquoted. One header line may hold several challenges
    (HTTP allows it; RFC 3261 §7.3.1 keeps SIP to one a line, but lenience costs little)."""
    out: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while pos < len(text):
        scheme = _SCHEME.match(text, pos)
        if scheme is not None:
            out.append((scheme.group(1), {}))
            pos = scheme.end()
        elif not out:
            raise SipParseError(f"no auth scheme in {text!r}")
        param = _PARAM.match(text, pos)
        if param is None:
            raise SipParseError(f"bad auth parameter at {text[pos:]!r}")
        name, params = param.group(1).lower(), out[-1][1]
        if name in params:  # RFC 7235 §2.1: each parameter at most once
            raise SipParseError(f"repeated auth parameter {name!r}")
        params[name] = _unquote(param.group(2))
        pos = param.end()
        if pos < len(text):
            sep = _SEPARATOR.match(text, pos)
            if sep is None or sep.end() == len(text):
                raise SipParseError(f"bad auth parameter list {text!r}")
            pos = sep.end()
    if not out:
        raise SipParseError("empty auth header")
    return out


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() == "true"  # anything else is false (§3.3)


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge (RFC 7616
    §3.3). ``algorithm`` is kept as sent, even one this module cannot answer; ``qop`` holds
    the offered options lower-cased, empty when the server sent none (RFC 2069)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    userhash: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge:
        """Parse one header value holding one Digest challenge; SipParseError otherwise."""
        found = parse_challenges(value)
        if len(found) != 1:
            raise SipParseError(f"expected one Digest challenge in {value!r}")
        return found[0]

    @classmethod
    def _from_params(cls, params: dict[str, str]) -> Challenge:
        if "realm" not in params or "nonce" not in params:
            raise SipParseError("Digest challenge without realm or nonce")
        algorithm = params.get("algorithm", "MD5")
        if not algorithm:
            raise SipParseError("empty Digest algorithm")
        qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=algorithm,
            qop=qop,
            opaque=params.get("opaque"),
            stale=_flag(params.get("stale")),
            domain=params.get("domain"),
            userhash=_flag(params.get("userhash")),
        )

    def __str__(self) -> str:
        """The header value, as a server would send it."""
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts += [f"nonce={_quote(self.nonce)}", f"algorithm={self.algorithm}"]
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def parse_challenges(value: str) -> list[Challenge]:
    """Every Digest challenge in one header value; other schemes are skipped.
    SipParseError when the value cannot be read or a Digest challenge is incomplete."""
    return [Challenge._from_params(p) for s, p in _scan(value) if s.lower() == "digest"]


# --- the client -------------------------------------------------------------------------------


class AuthKind(enum.Enum):
    """Which pair of headers a challenge came in (RFC 3261 §22.2, §22.3)."""

    #: 401 from the UAS or registrar: WWW-Authenticate answered with Authorization.
    WWW = ("WWW-Authenticate", "Authorization")
    #: 407 from a proxy: Proxy-Authenticate answered with Proxy-Authorization.
    PROXY = ("Proxy-Authenticate", "Proxy-Authorization")

    @property
    def challenge_header(self) -> str:
        return self.value[0]

    @property
    def credentials_header(self) -> str:
        return self.value[1]


_Key = tuple[AuthKind, str]  # (header pair, realm): one protection space


@dataclass
class _NonceState:
    """What we answer one realm with until it sends a new nonce."""

    challenge: Challenge
    algorithm: _Algorithm
    qop: str | None
    #: One cnonce per nonce: a -sess A1 is fixed by the first cnonce (RFC 7616 §3.4.2), and
    #: servers that recompute A1 on every request then still agree with us.
    cnonce: str
    nc: int = 0  #: requests sent with this nonce so far (RFC 7616 §3.4: nc counts them)


def _choose_qop(offered: tuple[str, ...]) -> str | None:
    """The qop to answer with: ``auth`` before ``auth-int`` (which covers the exact body);
    None when none was offered (RFC 2069 compatibility) or none of the offered fits."""
    return next((qop for qop in ("auth", "auth-int") if qop in offered), None)


class DigestAuth:
    """Answers digest challenges for one set of credentials (one trunk).

    It remembers the last challenge per protection space, so later requests can be sent
    with credentials up front (:meth:`authorize`) with the nonce count moving on.
    ``realm`` given: challenges for any other realm are not answered (the password is the
    trunk's; sending a response to another realm's challenge would offer it for cracking).
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str],
        realm: str | None = None,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        if _CONTROL.search(username):
            raise ValueError("control character in digest username")
        self._username = username
        self._password = password
        self._cnonce_factory = cnonce_factory
        self._realm = realm
        self._max_retries = max_retries
        self._spaces: dict[_Key, _NonceState] = {}

    def auth_flow(self, request: Request) -> Generator[Request, Response, None]:
        """Yield ``request``, then one retry per answerable 401/407 until a response that
        needs none, a refused credential, or the retry cap: then return (StopIteration).

        A challenge for a realm already answered in this flow that is not ``stale`` means
        the credentials were refused (RFC 7616 §3.3 stale): stop rather than ask again."""
        response = yield request
        if request.method in _UNCHALLENGED:
            return
        carried = self._carried(request)
        answered: set[_Key] = set()
        sent = request
        for _ in range(self._max_retries):
            keys = self._learn(response, answered)
            if not keys or sent.cseq.seq + 1 >= 2**31:  # §8.1.1.5: CSeq stays below 2**31
                return
            answered.update(keys)
            carried += [k for k in keys if k not in carried]
            sent = self._with_credentials(sent, carried, CSeq(sent.cseq.seq + 1, sent.cseq.method))
            response = yield sent

    def authorize(self, request: Request) -> Request | None:
        """``request`` with credentials for every protection space answered before (nonce
        count incremented, CSeq untouched), or None when there is nothing to answer with."""
        if request.method in _UNCHALLENGED or not self._spaces:
            return None
        return self._with_credentials(request, list(self._spaces), request.cseq)

    # -- learning challenges

    def _learn(self, response: Response, answered: set[_Key]) -> list[_Key]:
        """Take the challenges in a 401/407; the spaces to (re)answer, or [] to stop."""
        if response.status not in (401, 407):
            return []
        best = {key: self._strongest(found) for key, found in self._offers(response).items()}
        refused = [key for key, c in best.items() if key in answered and not c.stale]
        if refused:  # a new nonce alone is not "stale" (RFC 7616 §3.3): the password is wrong
            for key in refused:
                del self._spaces[key]  # and no use pre-authorising with it
            return []
        for key, challenge in best.items():
            self._remember(key, challenge)
        return list(best)

    def _offers(self, response: Response) -> dict[_Key, list[Challenge]]:
        """Answerable challenges by protection space, in the order received. A forking proxy
        may put both kinds, and several realms, in one response (RFC 3261 §16.7 step 6)."""
        offers: dict[_Key, list[Challenge]] = {}
        for kind in AuthKind:
            for line in response.headers.get_all(kind.challenge_header):
                for challenge in _parse_or_skip(line):
                    if self._answerable(challenge):
                        offers.setdefault((kind, challenge.realm), []).append(challenge)
        return offers

    def _answerable(self, challenge: Challenge) -> bool:
        if self._realm is not None and challenge.realm != self._realm:
            return False
        algo = _ALGORITHMS.get(challenge.algorithm.lower())
        qop = _choose_qop(challenge.qop)
        if algo is None or (challenge.qop and qop is None):
            return False
        # A -sess A1 needs a cnonce, and there is none without qop (RFC 2617 §3.2.2).
        return not (algo.session and qop is None)

    @staticmethod
    def _strongest(challenges: list[Challenge]) -> Challenge:
        """RFC 8760 §2.4 says use the topmost supported challenge "unless a local policy
        dictates otherwise". Our policy is the strongest hash: challenges are not integrity
        protected, and honouring the order would let an on-path attacker downgrade us to MD5
        by reordering them (RFC 8760 §3). Ties keep the server's order (max() takes the
        first)."""
        return max(challenges, key=lambda c: _lookup(c.algorithm).strength)

    def _remember(self, key: _Key, challenge: Challenge) -> None:
        algo, qop = _lookup(challenge.algorithm), _choose_qop(challenge.qop)
        self._spaces[key] = _NonceState(challenge, algo, qop, self._cnonce_factory())

    def _carried(self, request: Request) -> list[_Key]:
        """Spaces the request already holds our credentials for (from :meth:`authorize`):
        they are refreshed, not duplicated, on a retry."""
        keys: list[_Key] = []
        for kind in AuthKind:
            for line in request.headers.get_all(kind.credentials_header):
                realm = _realm_of(line)
                if realm is not None and (kind, realm) in self._spaces:
                    keys.append((kind, realm))
        return keys

    # -- building credentials

    def _with_credentials(self, request: Request, keys: list[_Key], cseq: CSeq) -> Request:
        """A copy of ``request`` carrying fresh credentials for ``keys``; other credential
        lines (not ours) are kept. Call-ID, From, To and Via stay as they are (§22.2)."""
        headers = request.headers.copy()
        headers.set("CSeq", str(cseq))
        for kind in AuthKind:
            ours = {realm for k, realm in keys if k is kind}
            kept = [v for v in headers.get_all(kind.credentials_header) if _realm_of(v) not in ours]
            headers.remove(kind.credentials_header)
            for value in kept:
                headers.add(kind.credentials_header, value)
        for key in keys:
            headers.add(key[0].credentials_header, self._credentials(key, request))
        return Request(request.method, request.uri, headers, request.body, request.version)

    def _credentials(self, key: _Key, request: Request) -> str:
        """The credentials value, in the order and quoting common servers expect: quoted
        strings except ``algorithm``, ``qop`` and ``nc`` (RFC 3261 §25.1 digest-response)."""
        state = self._spaces[key]
        state.nc += 1
        challenge, algo = state.challenge, state.algorithm
        response = digest_response(
            username=self._username,
            password=self._password,
            realm=challenge.realm,
            nonce=challenge.nonce,
            method=request.method,
            uri=request.uri,
            algorithm=algo.name,
            qop=state.qop,
            nc=state.nc,
            cnonce=state.cnonce,
            body=request.body,
        )
        username = self._username
        if challenge.userhash:
            username = hash_username(username, challenge.realm, algo.name)
        parts = [
            f"username={_quote(username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(request.uri)}",
            f"response={_quote(response)}",
            f"algorithm={algo.name}",
        ]
        if state.qop is not None:  # cnonce and nc only with qop (RFC 2617 §3.2.2)
            parts += [f"cnonce={_quote(state.cnonce)}", f"qop={state.qop}", f"nc={state.nc:08x}"]
        if challenge.opaque is not None:  # echoed unchanged (RFC 7616 §3.4)
            parts.append(f"opaque={_quote(challenge.opaque)}")
        if challenge.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def _parse_or_skip(line: str) -> list[Challenge]:
    """A malformed challenge line is ignored: the others may still be answerable, and if
    none is the flow stops and the caller reports the 401/407 as it came."""
    try:
        return parse_challenges(line)
    except SipParseError:
        return []


def _realm_of(credentials: str) -> str | None:
    try:
        found = _scan(credentials)
    except SipParseError:
        return None
    return found[0][1].get("realm") if len(found) == 1 else None


__all__ = [
    "MAX_RETRIES",
    "SUPPORTED_ALGORITHMS",
    "AuthKind",
    "Challenge",
    "DigestAuth",
    "digest_response",
    "hash_username",
    "parse_challenges",
]
