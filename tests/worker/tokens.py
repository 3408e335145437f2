"""Keys and tokens for the auth tests: an RSA pair, an HMAC secret, a JWKS."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SECRET = b"s" * 48  # long enough for HS256 and HS384
AUDIENCE = "siocluster-tests"
ISSUER = "https://issuer.test"


@dataclass(frozen=True)
class Keys:
    private: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey  # signs tokens no configured key verifies
    pem_file: Path
    secret_file: Path
    jwks_file: Path


def make_keys(directory: Path) -> Keys:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem_file = directory / "public.pem"
    pem_file.write_bytes(pem)
    secret_file = directory / "secret.key"
    secret_file.write_bytes(SECRET + b"\n")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}))
    return Keys(private, other, pem_file, secret_file, jwks_file)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER,
                            "iat": now, "exp": now + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def rs256(keys: Keys, kid: str | None = "k1", key: Any = None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**overrides), key or keys.private, algorithm="RS256",
                      headers=headers)


def hs256(secret: bytes = SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, algorithm="HS256")
