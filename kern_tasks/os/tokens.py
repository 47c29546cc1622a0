"""Users' JWTs, verified the way agno's AgentOS verifies them (agno/os/middleware/jwt.py).

    verifier = TokenVerifier(audience="my-os", verification_keys=[public_pem])
    user = verifier.verify(token)        # UserToken(user_id="alice", scopes=("schedules:read",))

A token is accepted when its signature verifies with one of the keys (a JWKS file's key
with the token's `kid` first, else its only key without a kid, then the static keys, in
order), under the one configured algorithm (RS256 unless told otherwise), its `aud` names
this OS's id, and `exp` / `nbf`, when present, hold with 10 s of leeway (agno's). `sub`
is the user; `scopes` (a list of strings, or one string) holds agno's scope names. Unlike
agno, the audience is always checked: a token minted for another OS is refused.

Misconfiguration (an unreadable JWKS file, a key that does not fit the algorithm) raises
`ValidationError` naming the setting when the verifier is built, so a server refuses to
start rather than refuse every token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from kern_tasks.errors import ValidationError
from kern_tasks.settings import Settings

LEEWAY_S = 10
NO_KID = ""  # the JWKS entry used for a token without a kid (a set of one key without one)


class InvalidToken(Exception):
    """The bearer token is not a JWT this OS accepts; the message says why (401)."""


@dataclass(frozen=True)
class UserToken:
    """What a verified token says: who the user is and what they may do."""

    user_id: str | None
    scopes: tuple[str, ...]


class TokenVerifier:
    """Verifies users' JWTs for one OS (module docstring). Thread-safe, immutable."""

    def __init__(
        self,
        *,
        audience: str,
        verification_keys: Sequence[str] = (),
        jwks_file: str | None = None,
        algorithm: str = "RS256",
    ) -> None:
        algorithms = get_default_algorithms()
        if algorithm not in algorithms or algorithm == "none":
            raise ValidationError("KERN_JWT_ALGORITHM", f"unknown algorithm {algorithm!r}; use RS256, ES256, HS256...")
        self.algorithm = algorithm
        self.audience = audience
        self.keys: list[Any] = [_prepared(algorithms[algorithm], key) for key in verification_keys if key]
        self.jwks: dict[str, Any] = _load_jwks(jwks_file) if jwks_file else {}
        if not self.keys and not self.jwks:
            raise ValidationError("KERN_JWT_VERIFICATION_KEY", "no verification key: set it or KERN_JWT_JWKS_FILE")

    @classmethod
    def from_settings(cls, settings: Settings, audience: str) -> TokenVerifier | None:
        """The verifier the settings describe; None when they name no key (JWTs are off)."""
        if not settings.jwt_enabled:
            return None
        keys = [settings.jwt_verification_key] if settings.jwt_verification_key else []
        return cls(audience=audience, verification_keys=keys, jwks_file=settings.jwt_jwks_file,
                   algorithm=settings.jwt_algorithm)

    def verify(self, token: str) -> UserToken:
        """The token's user and scopes; raises `InvalidToken` saying what is wrong."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("not a JWT") from None
        candidates = []
        kid = header.get("kid")
        jwk = self.jwks.get(kid) if isinstance(kid, str) else None
        if jwk is None and NO_KID in self.jwks:
            jwk = self.jwks[NO_KID]
        if jwk is not None:
            candidates.append(jwk.key)
        candidates += self.keys
        if not candidates:
            raise InvalidToken(f"no verification key for kid {str(kid)[:40]!r}")
        claims: dict[str, Any] | None = None
        failure: jwt.PyJWTError | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token, key, algorithms=[self.algorithm], audience=self.audience, leeway=LEEWAY_S,
                    options={"require": ["aud"]},
                )
                break
            except jwt.InvalidSignatureError as exc:
                failure = exc  # maybe the next key signed it
            except jwt.PyJWTError as exc:
                raise InvalidToken(_reason(exc, self.audience)) from None
        if claims is None:
            raise InvalidToken(_reason(failure, self.audience))
        return UserToken(user_id=_subject(claims.get("sub")), scopes=_scopes(claims.get("scopes")))


def _reason(exc: jwt.PyJWTError | None, audience: str) -> str:
    """Why a token was refused, in words that do not echo the token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf)"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim!r} claim (its audience must be this OS's id, {audience!r})"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"the token is for another audience (this OS's id is {audience!r})"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "the token is signed with another algorithm"
    if isinstance(exc, jwt.InvalidSignatureError) or exc is None:
        return "the token's signature does not verify"
    return "the token cannot be read (malformed JWT or claims)"


def _subject(sub: Any) -> str | None:
    if sub is None:
        return None
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 255 or "\x00" in sub:
        raise InvalidToken("the token's sub must be a non-blank string of at most 255 characters")
    return sub


def _scopes(value: Any) -> tuple[str, ...]:
    """agno's reading: a list of strings, or one string as a list of one; else none."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(scope for scope in value if isinstance(scope, str))
    return ()


def _prepared(algorithm: Any, key: str) -> Any:
    """The key as the algorithm uses it, checked now rather than on every token."""
    try:
        return algorithm.prepare_key(key)
    except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise ValidationError("KERN_JWT_VERIFICATION_KEY", f"does not fit the algorithm: {exc}") from None


def _load_jwks(path: str) -> dict[str, Any]:
    """kid -> key of a JWKS file (a key without a kid is used for tokens without one)."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except OSError as exc:
        raise ValidationError("KERN_JWT_JWKS_FILE", f"cannot read {path!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValidationError("KERN_JWT_JWKS_FILE", f"{path!r} is not JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValidationError("KERN_JWT_JWKS_FILE", f'{path!r} has no "keys" list of keys')
    keys: dict[str, Any] = {}
    for index, entry in enumerate(entries):
        try:
            jwk = jwt.PyJWK.from_dict(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise ValidationError("KERN_JWT_JWKS_FILE", f"key {index} of {path!r} is unusable: {exc}") from None
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) and kid else NO_KID] = jwk
    return keys
