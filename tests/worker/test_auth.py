"""Token extraction, verification and [auth] checks, without sockets."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from supervisor.config import AuthConfig
from tests.worker.tokens import AUDIENCE, ISSUER, SECRET, Keys, hs256, make_keys, rs256
from worker.auth import (
    MAX_TOKEN_CHARS,
    REASONS,
    AuthConfigError,
    AuthRejected,
    TokenVerifier,
    extract_token,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def rs_config(keys: Keys, **changes: object) -> AuthConfig:
    base = AuthConfig(enabled=True, key_file=str(keys.pem_file), algorithms=("RS256",),
                      audience=AUDIENCE, issuer=ISSUER)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def reason(verifier: TokenVerifier, token: str | None) -> tuple[str, str]:
    with pytest.raises(AuthRejected) as info:
        verifier.verify(token)
    assert info.value.reason in REASONS
    return info.value.reason, info.value.message


# Where the token comes from


def test_token_from_auth_payload_first() -> None:
    environ = {"HTTP_AUTHORIZATION": "Bearer from-header", "QUERY_STRING": "token=from-query"}
    assert extract_token({"token": "from-auth"}, environ) == "from-auth"


def test_token_from_bearer_header_then_query() -> None:
    environ = {"HTTP_AUTHORIZATION": "bearer  from-header ", "QUERY_STRING": "token=q"}
    assert extract_token(None, environ) == "from-header"
    assert extract_token({"other": 1}, environ) == "from-header"
    assert extract_token("not a dict", environ) == "from-header"
    assert extract_token(None, {"QUERY_STRING": "EIO=4&token=a%2Eb&transport=polling"}) == "a.b"


def test_no_token_anywhere() -> None:
    assert extract_token(None, {}) is None
    assert extract_token({}, {"HTTP_AUTHORIZATION": "Basic dXNlcjpwdw=="}) is None
    assert extract_token(None, {"HTTP_AUTHORIZATION": "Bearer ", "QUERY_STRING": "x=1"}) is None


def test_non_string_token_in_payload_is_malformed() -> None:
    with pytest.raises(AuthRejected) as info:
        extract_token({"token": 123}, {})
    assert info.value.reason == "malformed"


# Verification


def test_rs256_pem_accepts_a_good_token(keys: Keys) -> None:
    verifier = TokenVerifier.from_config(rs_config(keys))
    claims = verifier.verify(rs256(keys))
    assert claims["sub"] == "alice" and claims["aud"] == AUDIENCE


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # Times relative to when the test runs ("+600" is added to now then), not to
        # collection: a long suite reached this after the collection-time nbf had passed.
        ({"exp": -60}, ("expired", "invalid token: expired")),
        ({"nbf": +600}, ("not_yet_valid", "invalid token: not yet valid")),
        ({"aud": "someone-else"}, ("audience", "invalid token: wrong audience")),
        ({"iss": "https://evil.test"}, ("issuer", "invalid token: wrong issuer")),
        ({"aud": None}, ("missing_claim", "invalid token: missing claim aud")),
        ({"iss": None}, ("missing_claim", "invalid token: missing claim iss")),
    ],
)
def test_claim_failures_have_reasons(keys: Keys, overrides: dict[str, Any],
                                     expected: tuple[str, str]) -> None:
    verifier = TokenVerifier.from_config(rs_config(keys))
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") else v for k, v in overrides.items()}
    assert reason(verifier, rs256(keys, **claims)) == expected


def test_signature_and_format_failures(keys: Keys) -> None:
    verifier = TokenVerifier.from_config(rs_config(keys))
    assert reason(verifier, None) == ("missing", "missing token")
    assert reason(verifier, "  ") == ("missing", "missing token")
    assert reason(verifier, rs256(keys, key=keys.other))[0] == "bad_signature"
    assert reason(verifier, "not.a.jwt")[0] == "malformed"
    assert reason(verifier, "x" * (MAX_TOKEN_CHARS + 1)) == ("malformed",
                                                            "invalid token: too large")
    # alg=none and an HMAC token signed with the public key (alg confusion) both fail.
    unsigned = jwt.encode({"sub": "x", "aud": AUDIENCE, "iss": ISSUER}, None,  # type: ignore[arg-type]
                          algorithm="none")
    assert reason(verifier, unsigned)[0] == "algorithm"
    assert reason(verifier, _hs256_by_hand(keys.pem_file.read_bytes()))[0] == "algorithm"


def _hs256_by_hand(secret: bytes) -> str:
    """PyJWT will not sign with a PEM as HMAC secret; an attacker will."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "x", "aud": AUDIENCE, "iss": ISSUER}).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def test_leeway_accepts_a_just_expired_token(keys: Keys) -> None:
    token = rs256(keys, exp=int(time.time()) - 5)
    assert reason(TokenVerifier.from_config(rs_config(keys)), token)[0] == "expired"
    assert TokenVerifier.from_config(rs_config(keys, leeway_s=30.0)).verify(token)


def test_empty_audience_and_issuer_skip_those_checks(keys: Keys) -> None:
    verifier = TokenVerifier.from_config(rs_config(keys, audience="", issuer=""))
    assert verifier.verify(rs256(keys, aud="anything", iss="anyone"))["sub"] == "alice"
    assert verifier.verify(rs256(keys, aud=None, iss=None))["sub"] == "alice"


def test_hmac_secret_file(keys: Keys) -> None:
    config = AuthConfig(enabled=True, key_file=str(keys.secret_file), algorithms=("HS256",))
    verifier = TokenVerifier.from_config(config)
    assert verifier.verify(hs256())["sub"] == "alice"  # the file's trailing newline is ignored
    assert reason(verifier, hs256(b"t" * 48))[0] == "bad_signature"


def test_jwks_picks_the_key_by_kid(keys: Keys) -> None:
    config = AuthConfig(enabled=True, jwks_file=str(keys.jwks_file), algorithms=("RS256",))
    verifier = TokenVerifier.from_config(config)
    assert verifier.verify(rs256(keys, kid="k1"))["sub"] == "alice"
    assert verifier.verify(rs256(keys, kid=None))["sub"] == "alice"  # the only key
    assert reason(verifier, rs256(keys, kid="k2")) == ("unknown_key", "invalid token: unknown key")
    assert reason(verifier, rs256(keys, kid="k1", key=keys.other))[0] == "bad_signature"


def test_certificate_key_file(keys: Keys, tmp_path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(keys.private.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(keys.private, hashes.SHA256()))
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    verifier = TokenVerifier.from_config(rs_config(keys, key_file=str(path)))
    assert verifier.verify(rs256(keys))["sub"] == "alice"


# Settings that cannot work are refused when the worker starts


@pytest.mark.parametrize("algorithms", [("none",), ("RS256", "None"), ("NONE",)])
def test_none_algorithm_is_refused(keys: Keys, algorithms: tuple[str, ...]) -> None:
    with pytest.raises(AuthConfigError, match=r"^auth\.algorithms: 'none' is refused"):
        TokenVerifier.from_config(rs_config(keys, algorithms=algorithms))


def bad(config: AuthConfig) -> str:
    with pytest.raises(AuthConfigError) as info:
        TokenVerifier.from_config(config)
    return str(info.value)


def test_refused_settings_name_the_key(keys: Keys, tmp_path: Path) -> None:
    assert bad(rs_config(keys, algorithms=())).startswith("auth.algorithms:")
    assert "unknown algorithm 'RS999'" in bad(rs_config(keys, algorithms=("RS999",)))
    assert "exactly one of auth.key_file and auth.jwks_file" in bad(
        rs_config(keys, jwks_file=str(keys.jwks_file)))
    assert "exactly one" in bad(rs_config(keys, key_file=""))
    assert bad(rs_config(keys, key_file=str(tmp_path / "nope"))).startswith(
        "auth.key_file: cannot read")
    # A PEM key for HMAC, a secret for RSA, a too-short secret, a private key.
    assert "HS256 need an HMAC secret" in bad(rs_config(keys, algorithms=("HS256", "RS256")))
    assert "RS256 need a PEM public key" in bad(rs_config(keys, key_file=str(keys.secret_file)))
    short = tmp_path / "short.key"
    short.write_bytes(b"tooshort")
    assert "at least 32" in bad(AuthConfig(enabled=True, key_file=str(short),
                                           algorithms=("HS256",)))
    private = tmp_path / "private.pem"
    private.write_bytes(keys.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    assert "holds a private key" in bad(rs_config(keys, key_file=str(private)))
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    assert "is not a PEM public key" in bad(rs_config(keys, key_file=str(garbage)))


def test_key_type_must_suit_every_algorithm(keys: Keys, tmp_path: Path) -> None:
    ec_file = tmp_path / "ec.pem"
    ec_file.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    message = bad(rs_config(keys, key_file=str(ec_file), algorithms=("ES256", "RS256")))
    assert message.startswith("auth.algorithms: RS256 cannot use")


def test_jwks_problems_name_the_key(keys: Keys, tmp_path: Path) -> None:
    def jwks(text: str, algorithms: tuple[str, ...] = ("RS256",)) -> str:
        path = tmp_path / "jwks.json"
        path.write_text(text)
        return bad(AuthConfig(enabled=True, jwks_file=str(path), algorithms=algorithms))

    assert jwks("{not json").startswith("auth.jwks_file:")
    assert jwks('{"keys": []}').startswith("auth.jwks_file:")
    assert jwks(keys.jwks_file.read_text(), ("ES256",)).startswith("auth.algorithms: none of")
    key = json.loads(keys.jwks_file.read_text())["keys"][0]
    twins = json.dumps({"keys": [key, {**key}]})
    assert "unique 'kid'" in jwks(twins)


def test_secret_is_not_in_any_message(keys: Keys) -> None:
    config = AuthConfig(enabled=True, key_file=str(keys.secret_file), algorithms=("RS256",))
    assert SECRET.decode() not in bad(config)
