"""Users' JWTs and agno's scopes, over a real uvicorn (the TestClient where the HTTP stack
is not the point): which tokens are accepted, and which scope each route of the app needs,
checked against agno's own scope table (agno.os.scopes).

Tokens are signed here: RS256 with generated RSA keys (one published in a JWKS file by
kid, one given as a PEM verification key) and HS256 with a shared secret.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from agno.os.scopes import get_default_scope_mappings, get_required_scopes_for_route, get_resource_context_from_path
from agno.os.scopes import has_required_scopes as agno_allows
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from kern_tasks.agent import Agent
from kern_tasks.db import Database
from kern_tasks.errors import ValidationError
from kern_tasks.os import AgentOS
from kern_tasks.os.scopes import ADMIN_SCOPE, allows, is_listing, listable_ids, required_scopes
from kern_tasks.os.tokens import TokenVerifier
from kern_tasks.settings import Settings

from .os_server import LiveServer

OS_ID = "kern-test-os"
SECURITY_KEY = "security-key-5d1e"
SERVICE_TOKEN = "service-token-88aa"
HS_SECRET = "a shared secret of more than thirty-two bytes"
OPEN_PATHS = {"/health"}
AGNO_TABLE = get_default_scope_mappings()
PATH_VALUES = {"component_id": "demo", "agent_id": "demo", "workflow_id": "wf"}


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class Keys:
    """The signing side: what an identity provider would hold."""

    def __init__(self, tmp: Path) -> None:
        self.jwks_key, self.pem_key, self.stranger = rsa_key(), rsa_key(), rsa_key()
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.jwks_key.public_key(), as_dict=True)
        self.jwks_file = tmp / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))

    def token(self, sub: str | None = "alice", scopes: Any = (), *, key: Any = None, kid: str | None = "k1",
              aud: Any = OS_ID, algorithm: str = "RS256", **claims: Any) -> str:
        body: dict[str, Any] = {"exp": int(time.time()) + 600, **claims}
        if sub is not None:
            body["sub"] = sub
        if aud is not None:
            body["aud"] = aud
        body["scopes"] = list(scopes) if isinstance(scopes, (list, tuple)) else scopes
        headers = {"kid": kid} if kid else None
        return jwt.encode(body, key if key is not None else self.jwks_key, algorithm=algorithm, headers=headers)


def demo_os(db: Database, **settings: Any) -> AgentOS:
    base = dict(security_key=SECURITY_KEY, service_token=SERVICE_TOKEN, os_id=OS_ID)
    return AgentOS(agents=[Agent(model="offline", name="Demo"), Agent(model="offline", name="Helper")], db=db, settings=Settings(**{**base, **settings}))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('jwt') / 'kern.db'}", settings=Settings())
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def served(keys: Keys, db: Database) -> Iterator[tuple[AgentOS, LiveServer]]:
    agent_os = demo_os(db, jwt_jwks_file=str(keys.jwks_file), jwt_verification_key=public_pem(keys.pem_key))
    with LiveServer(agent_os.get_app()) as server:
        yield agent_os, server


@pytest.fixture
def http(served: tuple[AgentOS, LiveServer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1].url, timeout=15, trust_env=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- which tokens are accepted ----------------------------------------------------------


def test_tokens_from_the_jwks_file_and_the_pem_key_are_accepted(http: httpx.Client, keys: Keys) -> None:
    for token in (keys.token(scopes=["config:read"]), keys.token(scopes=["config:read"], key=keys.pem_key, kid=None),
                  keys.token(scopes="config:read"), keys.token(scopes=["system:read"])):  # agno's legacy name
        answer = http.get("/config", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        assert answer.json()["os_id"] == OS_ID  # the audience tokens name is the os_id /config reports


@pytest.mark.parametrize("case", [
    "stranger's key", "wrong audience", "no audience", "expired", "not yet valid", "unknown kid",
    "HS256 with the public key as secret", "not a JWT", "no subject", "blank subject",
])
def test_a_bad_token_answers_401_saying_why(http: httpx.Client, keys: Keys, case: str) -> None:
    scopes = ["config:read"]
    token, reason = {
        "stranger's key": (keys.token(scopes=scopes, key=keys.stranger), "signature does not verify"),
        "wrong audience": (keys.token(scopes=scopes, aud="another-os"), "another audience"),
        "no audience": (keys.token(scopes=scopes, aud=None), "no 'aud' claim"),
        "expired": (keys.token(scopes=scopes, exp=int(time.time()) - 60), "expired"),
        "not yet valid": (keys.token(scopes=scopes, nbf=int(time.time()) + 600), "not valid yet"),
        "unknown kid": (keys.token(scopes=scopes, key=keys.stranger, kid="k9"), "signature does not verify"),
        # The classic algorithm confusion: the public key used as an HMAC secret.
        "HS256 with the public key as secret": (
            jwt.encode({"sub": "alice", "aud": OS_ID, "scopes": scopes}, HS_SECRET, algorithm="HS256"),
            "another algorithm"),
        "not a JWT": ("definitely-not-a-jwt", "not a JWT"),
        "no subject": (keys.token(sub=None, scopes=scopes), "names no user"),
        "blank subject": (keys.token(sub="  ", scopes=scopes), "sub must be"),
    }[case]
    answer = http.get("/config", headers=bearer(token))
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert reason in answer.json()["detail"]
    assert token not in answer.text


def test_an_admin_token_may_omit_the_subject(http: httpx.Client, keys: Keys) -> None:
    assert http.get("/schedules", headers=bearer(keys.token(sub=None, scopes=[ADMIN_SCOPE]))).status_code == 200


def test_hs256_with_a_shared_secret(db: Database, keys: Keys) -> None:
    app = demo_os(db, jwt_verification_key=HS_SECRET, jwt_algorithm="HS256", security_key=None).get_app()
    with TestClient(app) as client:
        good = jwt.encode({"sub": "alice", "aud": OS_ID, "scopes": ["schedules:read"]}, HS_SECRET, algorithm="HS256")
        assert client.get("/schedules", headers=bearer(good)).status_code == 200
        forged = jwt.encode({"sub": "alice", "aud": OS_ID, "scopes": ["schedules:read"]}, HS_SECRET + "!",
                            algorithm="HS256")
        assert client.get("/schedules", headers=bearer(forged)).status_code == 401
        assert client.get("/schedules", headers=bearer(keys.token(scopes=["schedules:read"]))).status_code == 401
        # No security key configured: only JWTs (and the service token) get in.
        missing = client.get("/schedules")
        assert missing.status_code == 401 and "Bearer <JWT>" in missing.json()["detail"]
        assert client.get("/schedules", headers=bearer(SECURITY_KEY)).status_code == 401
        assert client.get("/health").status_code == 200


def test_a_misconfigured_key_stops_the_start_naming_the_setting(db: Database, tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "empty.json").write_text('{"keys": []}')
    broken = [
        ("KERN_JWT_JWKS_FILE", {"jwt_jwks_file": str(tmp_path / "missing.json")}),
        ("KERN_JWT_JWKS_FILE", {"jwt_jwks_file": str(tmp_path / "empty.json")}),
        ("KERN_JWT_VERIFICATION_KEY", {"jwt_verification_key": "a secret, not a PEM key"}),  # RS256 wants a PEM
        ("KERN_JWT_ALGORITHM", {"jwt_algorithm": "none", "jwt_verification_key": HS_SECRET}),
    ]
    for setting, values in broken:
        with pytest.raises(ValidationError) as raised:
            TokenVerifier.from_settings(Settings(**values), audience=OS_ID)
        assert raised.value.field == setting
        with pytest.raises(Exception, match=setting):  # the lifespan refuses to start
            with TestClient(demo_os(db, **values).get_app()):
                pass


# --- which scope each route needs ---------------------------------------------------------


def routes(agent_os: AgentOS) -> list[tuple[str, str]]:
    """(method, concrete path) of every route in the app's OpenAPI document but /health."""
    found = []
    for template, operations in agent_os.get_app().openapi()["paths"].items():
        if template in OPEN_PATHS:
            continue
        path = re.sub(r"\{([^}]+)\}", lambda m: PATH_VALUES.get(m.group(1), "x-1"), template)
        found += [(method.upper(), path) for method in operations]
    return found


# Routes of ours that agno does not have, with the scope of their agno sibling.
OURS = {("POST", "/schedules/x-1/backfill"): ["schedules:write"]}  # as /trigger


def agno_requires(method: str, path: str) -> list[str]:
    return get_required_scopes_for_route(AGNO_TABLE, method, path) or OURS.get((method, path), [])


def test_every_route_needs_the_scope_agnos_table_gives_it(served: tuple[AgentOS, LiveServer]) -> None:
    table = routes(served[0])
    assert len(table) >= 20
    for method, path in table:
        assert agno_requires(method, path), f"agno's table has no scope for {method} {path}"
        assert list(required_scopes(method, path) or []) == agno_requires(method, path), (method, path)


def send(client: httpx.Client, method: str, path: str, token: str) -> httpx.Response:
    return client.request(method, path, headers=bearer(token), data={} if method in ("POST", "PATCH") else None)


def test_the_scope_matrix(served: tuple[AgentOS, LiveServer], http: httpx.Client, keys: Keys) -> None:
    """Each route: refused 403 without its scope (naming it), and with another action of its
    family; let through with it, with admin, with the security key; the service token only
    on the run routes."""
    run_routes = {("POST", "/agents/demo/runs"), ("GET", "/agents/demo/runs/x-1"),
                  ("POST", "/workflows/wf/runs"), ("GET", "/workflows/wf/runs/x-1")}
    nothing, admin = keys.token(scopes=[]), keys.token(scopes=[ADMIN_SCOPE])
    for method, path in routes(served[0]):
        needed = agno_requires(method, path)
        refused = send(http, method, path, nothing)
        if is_listing(method, path):
            # agno's listing rule: let through, filtered to what the token may read (nothing).
            assert (refused.status_code, refused.json()) == (200, []), (method, path, refused.text)
            continue
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["detail"] == f"Insufficient permissions. Required scope(s): {', '.join(needed)}"
        family, action = needed[0].split(":")
        others = [f"{family}:{a}" for a in ("read", "write", "delete", "run") if a != action]
        assert send(http, method, path, keys.token(scopes=others)).status_code == 403, (method, path)
        for token in (keys.token(scopes=needed), admin, SECURITY_KEY):
            answer = send(http, method, path, token)
            assert answer.status_code not in (401, 403), (method, path, needed, answer.text)
        service = send(http, method, path, SERVICE_TOKEN)
        if (method, path) in run_routes:
            assert service.status_code not in (401, 403), (method, path, service.text)
        else:
            assert service.status_code == 403 and "only start and poll runs" in service.json()["detail"], (method, path)


def test_per_resource_scopes_name_one_agent(http: httpx.Client, keys: Keys) -> None:
    # 422 / 404: let through to the route (which wants a message / has no agent "other");
    # 403: refused before it.
    for scope, demo, other in (("agents:demo:run", 422, 403), ("agents:*:run", 422, 404), ("agents:run", 422, 404)):
        token = keys.token(scopes=[scope])
        assert http.post("/agents/demo/runs", headers=bearer(token)).status_code == demo, scope
        assert http.post("/agents/other/runs", headers=bearer(token)).status_code == other, scope
    reader = keys.token(scopes=["agents:demo:read"])
    assert http.get("/agents/demo", headers=bearer(reader)).status_code == 200
    # The listing shows what the token may read (agno's filtered listing), not a 403.
    listed = http.get("/agents", headers=bearer(reader))
    assert listed.status_code == 200 and [a["id"] for a in listed.json()] == ["demo"]
    assert http.get("/workflows", headers=bearer(reader)).json() == []  # an agents scope shows no workflow
    for every in ("agents:*:read", "agents:read"):
        assert sorted(a["id"] for a in http.get("/agents", headers=bearer(keys.token(scopes=[every]))).json()) == [
            "demo", "helper"], every
    assert listable_ids(["agents:demo:read", "agents:x:run"], "agents") == {"demo"}
    assert listable_ids(["agents:demo:read", "agents:read"], "agents") is None
    # A per-resource scope never stands in for another family's scope.
    assert http.get("/sessions", headers=bearer(keys.token(scopes=["agents:demo:read", "sessions:x:read"]))
                    ).status_code == 403


def test_docs_need_a_credential_and_unknown_paths_need_admin(http: httpx.Client, keys: Keys) -> None:
    assert http.get("/openapi.json").status_code == 401
    assert http.get("/openapi.json", headers=bearer(keys.token(scopes=[]))).status_code == 200
    assert http.get("/docs", headers=bearer(keys.token(scopes=[]))).status_code == 200
    assert http.get("/no/such/route", headers=bearer(keys.token(scopes=["agents:read"]))).status_code == 403
    assert http.get("/no/such/route", headers=bearer(keys.token(scopes=[ADMIN_SCOPE]))).status_code == 404
    assert http.get("/health").status_code == 200


# --- the decision, against agno's own functions -------------------------------------------

HELD = ["agent_os:admin", "agents:read", "agents:run", "agents:*:run", "agents:demo:run", "agents:other:run",
        "agents:demo:read", "workflows:wf:run", "workflows:*:read", "workflows:read", "teams:read",
        "sessions:read", "sessions:write", "sessions:delete", "sessions:demo:read", "system:read", "config:read",
        "schedules:read", "schedules:write", "schedules:delete", "traces:read", "traces:*:read", "bogus",
        "a:b:c:d", "schedules", ""]
FAMILIES = ["/agents", "/teams", "/workflows", "/sessions", "/traces", "/schedules", "/config", "/models"]
SEGMENTS = ["demo", "other", "wf", "x", "runs", "cancel", "continue", "enable", "disable", "trigger", "rename",
            "search", "*", ""]
paths = st.builds(lambda family, rest: "/".join([family, *rest]), st.sampled_from(FAMILIES),
                  st.lists(st.sampled_from(SEGMENTS), max_size=4))
methods = st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"])


@settings(max_examples=400, deadline=None)
@given(method=methods, path=paths, held=st.lists(st.sampled_from(HELD), max_size=4))
def test_ours_decides_as_agnos(method: str, path: str, held: list[str]) -> None:
    needed = agno_requires(method, path)
    assert list(required_scopes(method, path) or []) == needed
    if needed:
        kind, resource_id = get_resource_context_from_path(path)
        assert allows(held, needed, path) == agno_allows(held, needed, resource_type=kind, resource_id=resource_id)


def test_a_user_may_schedule_only_what_they_may_run(http: httpx.Client, keys: Keys) -> None:
    def create(token: str, **fields: Any) -> httpx.Response:
        body = {"name": f"s-{time.monotonic_ns()}", "cron_expr": "0 9 * * *", "endpoint": "/agents/demo/runs",
                "payload": {"message": "hi"}, **fields}
        return http.post("/schedules", json=body, headers=bearer(token))

    writer = keys.token(scopes=["schedules:write"])
    refused = create(writer)
    assert refused.status_code == 403 and refused.json()["detail"].endswith("Required scope(s): agents:run")
    assert create(keys.token(scopes=["schedules:write", "agents:other:run"])).status_code == 403
    plain = create(keys.token(scopes=["schedules:write", "agents:run"]), endpoint="/health", method="GET")
    assert plain.status_code == 403 and "only agent_os:admin" in plain.json()["detail"]
    for token in (keys.token(scopes=[ADMIN_SCOPE]), SECURITY_KEY):
        assert create(token, endpoint="/health", method="GET").status_code == 201

    runner = keys.token(sub="ursula", scopes=["schedules:write", "schedules:read", "agents:demo:run"])
    made = create(runner)
    assert made.status_code == 201 and made.json()["user_id"] == "ursula"
    path = f"/schedules/{made.json()['id']}"
    # Changing the target is scheduling it anew; other changes are not.
    moved = http.patch(path, json={"method": "GET"}, headers=bearer(runner))
    assert moved.status_code == 403 and "only agent_os:admin" in moved.json()["detail"]
    assert http.patch(path, json={"cron_expr": "0 10 * * *"}, headers=bearer(runner)).status_code == 200
    assert http.patch(path, json={"endpoint": "/agents/demo/runs"}, headers=bearer(runner)).status_code == 200
    assert http.get(path, headers=bearer(runner)).json()["method"] == "POST"
