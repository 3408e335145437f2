"""JWT authentication of Socket.IO connections (``[auth]``).

Theory of operation
-------------------
When ``[auth] enabled = true``, every Socket.IO namespace connection must carry
a JSON Web Token, looked for in this order:

1. the connect packet's ``auth`` payload, ``{"token": "<jwt>"}`` (what
   ``io(url, {auth: {token}})`` and ``AsyncClient.connect(url, auth={...})``
   send);
2. the handshake's ``Authorization: Bearer <jwt>`` header;
3. the handshake's ``?token=<jwt>`` query parameter (beware: query strings end
   up in access logs).

:class:`TokenVerifier` checks it with PyJWT: signature against the key from
``key_file`` (an HMAC secret, or a PEM public key or certificate) or from
``jwks_file`` (a JWK Set; the token's ``kid`` picks the key), one of
``algorithms`` (``none`` is refused when the worker starts), ``audience``
and ``issuer`` when set, ``exp``/``nbf``/``iat`` with ``leeway_s``.  All of
the key handling happens once, at start; a bad setting raises
:class:`AuthConfigError` naming the ``auth.*`` key, and the worker reports a
boot failure instead of serving unauthenticated.

A token that fails raises :class:`AuthRejected`, whose ``reason`` is a short
code (``missing``, ``expired``, ``bad_signature``...) and whose ``message``
("invalid token: expired") is what the client's ``connect_error`` shows.
:mod:`worker.guards` turns it into a refused connection and counts it.

Where the app finds the claims
------------------------------
The verified claims (a dict) are:

* in the connect handler's ``environ`` under :data:`ENVIRON_CLAIMS_KEY`
  (``"siocluster.auth.claims"``), for the handler that runs right after
  verification;
* in the socket's session under :data:`CLAIMS_KEY` (``"claims"``), set before
  the app's connect handler runs and put back after it if the handler replaced
  the session: ``(await sio.get_session(sid))["claims"]``;
* through :func:`get_claims`: ``await worker.auth.get_claims(sio, sid)``.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .config import AuthConfig
from .exceptions import AuthConfigError

__all__ = [
    "CLAIMS_KEY",
    "ENVIRON_CLAIMS_KEY",
    "MAX_TOKEN_CHARS",
    "REASONS",
    "AuthConfigError",
    "AuthRejected",
    "TokenVerifier",
    "extract_token",
    "get_claims",
]

log = logging.getLogger("siocluster.worker.auth")

CLAIMS_KEY = "claims"
ENVIRON_CLAIMS_KEY = "siocluster.auth.claims"
# Every AuthRejected.reason, so counters can be listed before the first failure.
REASONS = (
    "missing",
    "malformed",
    "expired",
    "not_yet_valid",
    "audience",
    "issuer",
    "issued_at",
    "missing_claim",
    "algorithm",
    "bad_signature",
    "unknown_key",
    "invalid",
)
# Far above any sane token; keeps a hostile one from costing base64 + JSON work.
MAX_TOKEN_CHARS = 8192

_HMAC = {"HS256": 32, "HS384": 48, "HS512": 64}  # minimum secret bytes, RFC 7518 3.2


class AuthRejected(Exception):
    """A connection's token did not verify; ``message`` is shown to the client."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.message = (
            "missing token" if reason == "missing" else f"invalid token: {detail or reason}"
        )
        super().__init__(self.message)


def extract_token(auth: Any, environ: Mapping[str, Any]) -> str | None:
    """The token from the auth payload, else the Bearer header, else ``?token=``.

    Raises :class:`AuthRejected` when the auth payload carries a token that
    is not a string.
    """
    if isinstance(auth, Mapping) and auth.get("token") is not None:
        token = auth["token"]
        if not isinstance(token, str):
            raise AuthRejected("malformed", "token is not a string")
        return token
    header = environ.get("HTTP_AUTHORIZATION")
    if isinstance(header, str):
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    query = environ.get("QUERY_STRING")
    if isinstance(query, str) and "token=" in query:
        values = urllib.parse.parse_qs(query).get("token")
        if values:
            return values[0]
    return None


async def get_claims(sio: Any, sid: str, namespace: str | None = None) -> dict[str, Any] | None:
    """The verified claims of Socket.IO socket ``sid``, or None without auth."""
    session = await sio.get_session(sid, namespace=namespace)
    claims = session.get(CLAIMS_KEY) if isinstance(session, Mapping) else None
    return claims if isinstance(claims, dict) else None


# PyJWT's exceptions, most specific first, as (reason, client-facing detail).
_REASONS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "not yet valid"),
    (jwt.InvalidAudienceError, "audience", "wrong audience"),
    (jwt.InvalidIssuerError, "issuer", "wrong issuer"),
    (jwt.InvalidIssuedAtError, "issued_at", "bad iat"),
    (jwt.MissingRequiredClaimError, "missing_claim", "missing claim"),
    (jwt.InvalidAlgorithmError, "algorithm", "algorithm not allowed"),
    (jwt.InvalidSignatureError, "bad_signature", "bad signature"),
    (jwt.InvalidKeyError, "bad_signature", "bad signature"),
    (jwt.DecodeError, "malformed", "malformed"),
)


@dataclass(frozen=True, slots=True)
class _Settings:
    algorithms: list[str]
    audience: str | None
    issuer: str | None
    leeway_s: float


class TokenVerifier:
    """Verify JWTs against the ``[auth]`` settings; built once per worker."""

    def __init__(
        self,
        settings: _Settings,
        *,
        key: Any = None,
        jwks: jwt.PyJWKSet | None = None,
    ) -> None:
        self._settings = settings
        self._key = key
        self._jwks = {k.key_id: k for k in jwks.keys} if jwks is not None else None

    @classmethod
    def from_config(
        cls, config: AuthConfig, *, read: Callable[[str], bytes] | None = None
    ) -> TokenVerifier:
        """Check every ``[auth]`` setting and load the key; raise AuthConfigError."""
        read_file = read or (lambda name: Path(name).read_bytes())
        algorithms = _check_algorithms(config.algorithms)
        settings = _Settings(
            algorithms=algorithms,
            audience=config.audience or None,
            issuer=config.issuer or None,
            leeway_s=config.leeway_s,
        )
        if bool(config.key_file) == bool(config.jwks_file):
            raise AuthConfigError(
                "auth: set exactly one of auth.key_file and auth.jwks_file "
                f"(key_file={config.key_file!r}, jwks_file={config.jwks_file!r})"
            )
        name = "auth.key_file" if config.key_file else "auth.jwks_file"
        path = config.key_file or config.jwks_file
        try:
            raw = read_file(path)
        except OSError as exc:
            raise AuthConfigError(f"{name}: cannot read {path!r}: {exc.strerror or exc}") from None
        if config.jwks_file:
            return cls(settings, jwks=_load_jwks(raw, algorithms, path))
        return cls(settings, key=_load_key(raw, algorithms, path))

    def verify(self, token: str | None) -> dict[str, Any]:
        """The token's claims, or :class:`AuthRejected` with the reason."""
        if token is None or not token.strip():
            raise AuthRejected("missing")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthRejected("malformed", "too large")
        s = self._settings
        try:
            key = self._key if self._jwks is None else self._jwk_for(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=s.algorithms,
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"verify_aud": s.audience is not None},
            )
        except AuthRejected:
            raise
        except jwt.PyJWTError as exc:
            for kind, reason, detail in _REASONS:
                if isinstance(exc, kind):
                    if reason == "missing_claim":
                        detail = f"missing claim {getattr(exc, 'claim', '?')}"
                    raise AuthRejected(reason, detail) from None
            raise AuthRejected("invalid", "rejected") from None
        except (ValueError, TypeError):
            # Garbage PyJWT does not wrap (odd JSON shapes in the header).
            raise AuthRejected("malformed", "malformed") from None
        if not isinstance(claims, dict):  # pragma: no cover - PyJWT returns dicts
            raise AuthRejected("malformed", "malformed")
        return claims

    def _jwk_for(self, token: str) -> jwt.PyJWK:
        assert self._jwks is not None
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None and len(self._jwks) == 1:
            return next(iter(self._jwks.values()))
        found = self._jwks.get(kid) if isinstance(kid, str) else None
        if found is None:
            raise AuthRejected("unknown_key", "unknown key")
        return found


def _check_algorithms(algorithms: tuple[str, ...]) -> list[str]:
    if not algorithms:
        raise AuthConfigError("auth.algorithms: must name at least one algorithm, e.g. RS256")
    known = set(jwt.algorithms.get_default_algorithms()) - {"none"}
    for alg in algorithms:
        if alg.lower() == "none":
            raise AuthConfigError(
                "auth.algorithms: 'none' is refused (it accepts unsigned tokens); "
                "list real algorithms such as RS256 or HS256"
            )
        if alg not in known:
            raise AuthConfigError(
                f"auth.algorithms: unknown algorithm {alg!r}; one of {', '.join(sorted(known))}"
            )
    return list(algorithms)


def _load_key(raw: bytes, algorithms: list[str], path: str) -> Any:
    hmac = [a for a in algorithms if a in _HMAC]
    asymmetric = [a for a in algorithms if a not in _HMAC]
    if b"-----BEGIN" in raw:
        if hmac:
            raise AuthConfigError(
                f"auth.algorithms: {', '.join(hmac)} need an HMAC secret, but auth.key_file "
                f"{path!r} holds a PEM key"
            )
        if b"PRIVATE KEY" in raw:
            raise AuthConfigError(
                f"auth.key_file: {path!r} holds a private key; give the workers the public key"
            )
        try:
            if b"CERTIFICATE" in raw:
                key: Any = x509.load_pem_x509_certificate(raw).public_key()
            else:
                key = serialization.load_pem_public_key(raw)
        except ValueError as exc:
            raise AuthConfigError(
                f"auth.key_file: {path!r} is not a PEM public key: {exc}"
            ) from None
        for alg in asymmetric:
            try:
                jwt.get_algorithm_by_name(alg).prepare_key(key)
            except (TypeError, ValueError, jwt.PyJWTError):
                raise AuthConfigError(
                    f"auth.algorithms: {alg} cannot use the {type(key).__name__} "
                    f"in auth.key_file {path!r}"
                ) from None
        return key
    if asymmetric:
        raise AuthConfigError(
            f"auth.algorithms: {', '.join(asymmetric)} need a PEM public key, but "
            f"auth.key_file {path!r} holds no PEM block (an HMAC secret?)"
        )
    # A secret file usually ends with a newline the secret does not include.
    secret = raw.rstrip(b"\r\n")
    need = max(_HMAC[a] for a in hmac)
    if len(secret) < need:
        raise AuthConfigError(
            f"auth.key_file: the HMAC secret in {path!r} is {len(secret)} bytes; "
            f"{'/'.join(hmac)} need at least {need} (RFC 7518 section 3.2)"
        )
    return secret


def _load_jwks(raw: bytes, algorithms: list[str], path: str) -> jwt.PyJWKSet:
    try:
        jwks = jwt.PyJWKSet.from_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, jwt.PyJWTError) as exc:
        raise AuthConfigError(f"auth.jwks_file: {path!r} is not a usable JWK Set: {exc}") from None
    kids = [k.key_id for k in jwks.keys]
    if len(kids) > 1 and (None in kids or len(set(kids)) != len(kids)):
        raise AuthConfigError(
            f"auth.jwks_file: {path!r} has several keys, so each needs its own unique 'kid'"
        )
    usable = [k for k in jwks.keys if k.algorithm_name in algorithms]
    if not usable:
        raise AuthConfigError(
            f"auth.algorithms: none of {', '.join(algorithms)} matches a key in auth.jwks_file "
            f"{path!r} (keys are {', '.join(sorted({k.algorithm_name for k in jwks.keys}))})"
        )
    return jwks
