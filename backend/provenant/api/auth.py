"""Sign-In with Ethereum (EIP-4361) sessions for every state-changing HTTP call.

The flow: `GET /v1/auth/nonce` hands out a one-time nonce; the wallet signs a SIWE message
naming this server's domain, its chain id, that nonce and an expiry; `POST /v1/auth/login`
checks all of it and returns a bearer token bound to the signing address. Writes depend on
`require_session`, which yields that address; roles (curator, owner, attributor) are then read
from chain state by the endpoint, never from request fields.

What is refused, each with its own message: an unknown, expired or already used nonce (so a
replayed message never logs in twice), another domain or chain id, a message without an expiry
or with one beyond the session limit, a not-before in the future, a signature by anyone but
the message's address. Tokens are random, stored only as their SHA-256, and expire.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Callable

from pathlib import Path

from fastapi import APIRouter, Depends, Header, HTTPException
from pydantic import BaseModel, Field

NONCE_TTL_S = 300.0
MAX_OUTSTANDING_NONCES = 10_000  # oldest evicted first: nonce requests cannot grow memory without bound
MAX_MESSAGE_BYTES = 4_096


class AuthError(HTTPException):
    def __init__(self, detail: str, status_code: int = 401) -> None:
        super().__init__(status_code=status_code, detail=detail, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Session:
    address: str  # checksummed
    expires_at: float  # unix seconds


def _siwe():  # type: ignore[no-untyped-def]
    """The siwe package, imported on first sign-in: building its ABNF grammar takes ~0.5 s."""
    with warnings.catch_warnings():
        # siwe's EIP-4361 grammar redefines RFC 5234 core rules; abnf warns about it on import.
        warnings.simplefilter("ignore")
        import siwe

    return siwe


@dataclass
class SiweSessions:
    """Issued nonces (in memory: they live five minutes) and sessions (in memory, and in a SQLite
    file when `path` is given, so that a restart does not sign everyone out)."""

    domain: str  # host[:port] the wallet shows the user, e.g. "localhost:8000"
    chain_id: int
    max_session_s: float = 24 * 3600.0
    clock: Callable[[], float] = time.time
    path: Path | None = None
    _nonces: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _sessions: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS sessions (digest TEXT PRIMARY KEY, address TEXT NOT NULL, "
                       "expires_at REAL NOT NULL)")
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (self.clock(),))
            for digest, address, expires_at in db.execute("SELECT digest, address, expires_at FROM sessions"):
                self._sessions[digest] = Session(address=address, expires_at=expires_at)

    def _db(self) -> sqlite3.Connection:
        assert self.path is not None
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)  # autocommit: one statement each

    def new_nonce(self) -> tuple[str, float]:
        nonce = secrets.token_hex(16)  # EIP-4361: at least 8 alphanumeric characters
        expires = self.clock() + NONCE_TTL_S
        with self._lock:
            self._nonces[nonce] = expires
            while len(self._nonces) > MAX_OUTSTANDING_NONCES:
                self._nonces.popitem(last=False)
        return nonce, expires

    def _take_nonce(self, nonce: str) -> None:
        """Consume a nonce exactly once; a second login with the same message finds it gone."""
        with self._lock:
            expires = self._nonces.pop(nonce, None)
        if expires is None:
            raise AuthError("nonce unknown or already used: ask GET /v1/auth/nonce for a new one")
        if self.clock() > expires:
            raise AuthError("nonce expired: ask GET /v1/auth/nonce for a new one")

    def login(self, message: str, signature: str) -> tuple[str, Session]:
        if len(message.encode()) > MAX_MESSAGE_BYTES:
            raise AuthError(f"SIWE message over {MAX_MESSAGE_BYTES} bytes", status_code=413)
        siwe = _siwe()
        try:
            parsed = siwe.SiweMessage.from_message(message)
        except Exception as exc:  # the parser raises several types; all mean "not EIP-4361"
            raise AuthError(f"not a Sign-In with Ethereum (EIP-4361) message: {type(exc).__name__}") from None
        if parsed.domain != self.domain:
            raise AuthError(f"message is for domain {parsed.domain!r}, this server is {self.domain!r}")
        if int(parsed.chain_id) != self.chain_id:
            raise AuthError(f"message is for chain id {parsed.chain_id}, this server is on {self.chain_id}")
        now = self.clock()
        expires_at = _unix(parsed.expiration_time) if parsed.expiration_time else None
        if expires_at is None:
            raise AuthError("message has no Expiration Time; sessions must expire")
        if expires_at - now > self.max_session_s:
            raise AuthError(f"Expiration Time is more than {int(self.max_session_s)} s away")
        self._take_nonce(parsed.nonce)  # consumed even if what follows fails: a nonce is one attempt
        try:
            parsed.verify(signature, domain=self.domain, nonce=parsed.nonce,
                          timestamp=datetime.fromtimestamp(now, tz=timezone.utc))
        except siwe.ExpiredMessage:
            raise AuthError("message expired") from None
        except (siwe.DomainMismatch, siwe.NonceMismatch) as exc:  # checked above; kept for defence in depth
            raise AuthError(f"message rejected: {type(exc).__name__}") from None
        except siwe.InvalidSignature:
            raise AuthError(f"signature is not by {parsed.address}") from None
        except siwe.VerificationError as exc:  # not-before in the future, malformed signature, ...
            raise AuthError(f"message rejected: {type(exc).__name__}") from None
        token = secrets.token_urlsafe(32)
        session = Session(address=parsed.address, expires_at=expires_at)
        with self._lock:
            self._sessions[_digest(token)] = session
            if self.path is not None:
                with self._db() as db:
                    db.execute("INSERT INTO sessions VALUES (?, ?, ?)", (_digest(token), session.address, expires_at))
        return token, session

    def session(self, token: str) -> Session:
        with self._lock:
            session = self._sessions.get(_digest(token))
        if session is None:
            raise AuthError("unknown or revoked session token: sign in again")
        if self.clock() >= session.expires_at:
            self.logout(token)
            raise AuthError("session expired: sign in again")
        return session

    def logout(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(_digest(token), None)
            if self.path is not None:
                with self._db() as db:
                    db.execute("DELETE FROM sessions WHERE digest = ?", (_digest(token),))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _unix(iso: str) -> float:
    return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthError("this call changes state: sign in with Ethereum and send 'Authorization: Bearer <token>'")
    return authorization[7:].strip()


def session_dependency(sessions: SiweSessions) -> Callable[..., Session]:
    """A FastAPI dependency: the caller's SIWE session, or 401 naming what is missing."""

    def require_session(authorization: Annotated[str | None, Header()] = None) -> Session:
        return sessions.session(_bearer(authorization))

    return require_session


class NonceOut(BaseModel):
    nonce: str
    expires_at: float
    domain: str
    chain_id: int


class LoginIn(BaseModel):
    message: str = Field(max_length=MAX_MESSAGE_BYTES, description="the EIP-4361 message the wallet signed")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="65-byte EIP-191 signature, 0x-hex")


class SessionOut(BaseModel):
    address: str
    expires_at: float
    token: str | None = None


def create_auth_router(sessions: SiweSessions) -> APIRouter:
    router = APIRouter(prefix="/v1/auth", tags=["auth"])
    require_session = session_dependency(sessions)

    @router.get("/nonce", response_model=NonceOut)
    def nonce() -> NonceOut:
        """A one-time nonce for a SIWE message, valid for five minutes."""
        value, expires = sessions.new_nonce()
        return NonceOut(nonce=value, expires_at=expires, domain=sessions.domain, chain_id=sessions.chain_id)

    @router.post("/login", response_model=SessionOut,
                 responses={401: {"description": "message or signature refused"}, 413: {"description": "message too long"}})
    def login(body: LoginIn) -> SessionOut:
        """Exchange a signed SIWE message for a bearer token."""
        token, session = sessions.login(body.message, body.signature)
        return SessionOut(address=session.address, expires_at=session.expires_at, token=token)

    unauthorised = {401: {"description": "no live session for the bearer token"}}

    @router.get("/session", response_model=SessionOut, responses=unauthorised)
    # `= Depends(...)`, not Annotated: with postponed annotations FastAPI could not resolve the
    # closure's local `require_session` from a string.
    def current(session: Session = Depends(require_session)) -> SessionOut:
        """Who the bearer token belongs to, and until when."""
        return SessionOut(address=session.address, expires_at=session.expires_at)

    @router.post("/logout", status_code=204, responses=unauthorised)
    def logout(authorization: Annotated[str | None, Header()] = None) -> None:
        """Revoke the bearer token."""
        token = _bearer(authorization)
        sessions.session(token)  # 401 for a token that is not a live session
        sessions.logout(token)

    return router
