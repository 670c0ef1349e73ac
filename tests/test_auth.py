"""Optional authentication: signed, expiring tokens (HS256), by header or query parameter, and the CLI."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import ValidationError

from tests.fakes.control import FakeAnthropic
from tests.harness import ROOT, ServerProcess, run_cli
from tests.security import (
    AUTH_SECRET,
    AUTH_SECRET_PREVIOUS,
    MEMBER_EMAIL,
    MEMBER_NAME,
    ask_plain,
    ask_sse,
    team_file,
)
from tests.sse import CHAT, SSE
from zantara_rag.errors import Unauthorized
from zantara_rag.http.auth import LEEWAY_SECONDS, MAX_TTL_SECONDS, mint_token, parse_ttl, verify_token
from zantara_rag.settings import Settings

SETTINGS = Settings(auth_secret=AUTH_SECRET, auth_secret_previous=AUTH_SECRET_PREVIOUS)


def signed(secret: str, sub: str = "someone@example.com", ttl: int = 300, **claims: Any) -> str:
    """A token as `zantara-rag token` mints it (any claim can be overridden, or dropped with None)."""
    now = int(time.time())
    body = {"sub": sub, "aud": "zantara-rag", "iat": now, "exp": now + ttl, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm="HS256")


def unsigned(sub: str = "someone@example.com") -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': sub, 'iat': now, 'exp': now + 300})}."


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin@balizero.com"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


BAD_TOKENS = {
    "expired": lambda: signed(AUTH_SECRET, ttl=-60),
    "wrong-secret": lambda: signed("another-secret-of-at-least-32-bytes!!"),
    "tampered": lambda: tampered(signed(AUTH_SECRET)),
    "alg-none": unsigned,
    "no-subject": lambda: signed(AUTH_SECRET, sub=None),  # type: ignore[arg-type]
    "no-expiry": lambda: signed(AUTH_SECRET, exp=None),
    "no-issued-at": lambda: signed(AUTH_SECRET, iat=None),
    "issued-in-the-future": lambda: signed(
        AUTH_SECRET, iat=int(time.time()) + 3600, exp=int(time.time()) + 7200
    ),
    "hundred-years": lambda: signed(AUTH_SECRET, ttl=100 * 365 * 86400),
    "hundred-years-no-audience": lambda: signed(AUTH_SECRET, ttl=100 * 365 * 86400, aud=None),
    "thirty-days-and-a-second": lambda: signed(AUTH_SECRET, ttl=MAX_TTL_SECONDS + 1),
    "no-audience": lambda: signed(AUTH_SECRET, aud=None),
    "foreign-issuer-no-audience": lambda: signed(AUTH_SECRET, aud=None, iss="https://accounts.example"),
    "another-audience": lambda: signed(AUTH_SECRET, aud="billing-service"),
    "audience-list": lambda: signed(AUTH_SECRET, aud=["zantara-rag", "billing-service"]),
    "expired-beyond-leeway": lambda: signed(AUTH_SECRET, ttl=-(LEEWAY_SECONDS + 5)),
    "garbage": lambda: "not.a.token",
    "empty": lambda: "",
}


# --- the token itself


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), (" 1H ", 3600)]
)
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1w", "-1h", "0s", "1.5h", "31d", "1h30m", "１h"])
def test_parse_ttl_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_a_minted_token_carries_subject_audience_and_expiry() -> None:
    token = mint_token(SETTINGS, "made.wijaya@balizero.com", 3600)
    claims = jwt.decode(token, AUTH_SECRET, algorithms=["HS256"], audience="zantara-rag")
    assert claims["sub"] == "made.wijaya@balizero.com" and claims["exp"] - claims["iat"] == 3600
    assert claims["aud"] == "zantara-rag"
    assert verify_token(SETTINGS, token).subject == "made.wijaya@balizero.com"
    with pytest.raises(ValueError, match="lifetime"):
        mint_token(SETTINGS, "someone@example.com", MAX_TTL_SECONDS + 1)


def test_the_longest_lifetime_the_cli_mints_is_accepted() -> None:
    assert verify_token(SETTINGS, signed(AUTH_SECRET, ttl=MAX_TTL_SECONDS)).subject == "someone@example.com"


def test_the_audience_is_a_setting() -> None:
    other = Settings(auth_secret=AUTH_SECRET, auth_audience="zantara-staging")
    with pytest.raises(Unauthorized):
        verify_token(other, signed(AUTH_SECRET))
    assert verify_token(other, mint_token(other, "a@example.com", 60)).subject == "a@example.com"


def test_scopes_come_from_the_scope_claim() -> None:
    principal = verify_token(SETTINGS, signed(AUTH_SECRET, scope="chat admin"))
    assert principal.scopes == {"chat", "admin"}
    assert verify_token(SETTINGS, signed(AUTH_SECRET)).scopes == frozenset()


def test_tokens_of_the_previous_secret_stay_valid_during_a_rotation() -> None:
    assert (
        verify_token(SETTINGS, signed(AUTH_SECRET_PREVIOUS, sub="old@example.com")).subject
        == "old@example.com"
    )
    after_rotation = Settings(auth_secret=AUTH_SECRET)
    with pytest.raises(Unauthorized):
        verify_token(after_rotation, signed(AUTH_SECRET_PREVIOUS))


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused(kind: str) -> None:
    with pytest.raises(Unauthorized):
        verify_token(SETTINGS, BAD_TOKENS[kind]())


@pytest.mark.parametrize("secret", ["short", "x" * 31, "é" * 15])
def test_a_short_secret_refuses_to_boot(secret: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(auth_secret=secret)


def test_a_team_directory_without_authentication_refuses_to_boot(tmp_path: Path) -> None:
    # Without tokens, `user_email=<a staff address>` would be told to the model as that staff member.
    team = team_file(tmp_path)
    with pytest.raises(ValidationError, match="TEAM_DIRECTORY needs AUTH_SECRET"):
        Settings(team_directory=team)
    assert Settings(team_directory=team, auth_secret=AUTH_SECRET).team_directory == team


@pytest.mark.slow  # starts the CLI as a subprocess
def test_serve_with_a_team_directory_and_no_secret_exits_2(tmp_path: Path) -> None:
    out = cli("serve", TEAM_DIRECTORY=str(team_file(tmp_path)))
    assert out.returncode == 2 and "TEAM_DIRECTORY needs AUTH_SECRET" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow  # starts the CLI as a subprocess
def test_serve_with_a_short_secret_exits_2_without_echoing_it() -> None:
    out = cli("serve", AUTH_SECRET="tiny-secret-VALUE")
    assert out.returncode == 2
    assert "AUTH_SECRET" in out.stderr and "32 bytes" in out.stderr
    assert "tiny-secret-VALUE" not in out.stdout + out.stderr


# --- the CLI


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=60, **env)


@pytest.mark.slow  # starts the CLI as a subprocess
def test_cli_token_prints_a_token_the_server_accepts() -> None:
    out = cli("token", "--sub", MEMBER_EMAIL, "--ttl", "15m", AUTH_SECRET=AUTH_SECRET)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    claims = jwt.decode(token, AUTH_SECRET, algorithms=["HS256"], audience="zantara-rag")
    assert claims["sub"] == MEMBER_EMAIL and claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - time.time()) < 60


@pytest.mark.slow  # starts the CLI as a subprocess
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--sub", "a@b.co"], {}, "set AUTH_SECRET first"),
        (["--sub", "a@b.co", "--ttl", "forever"], {"AUTH_SECRET": AUTH_SECRET}, "not a lifetime"),
        (["--sub", " ", "--ttl", "1h"], {"AUTH_SECRET": AUTH_SECRET}, "subject"),
    ],
)
def test_cli_token_refuses_cleanly(args: list[str], env: dict[str, str], message: str) -> None:
    out = cli("token", *args, **env)
    assert out.returncode == 2 and message in out.stderr
    assert "Traceback" not in out.stderr and not out.stdout


# --- against the server


def test_without_a_token_chat_is_refused(secured_server: ServerProcess, claude: FakeAnthropic) -> None:
    with httpx.Client(base_url=secured_server.url, timeout=30) as client:
        in_band = ask_sse(client)
        plain = ask_plain(client)
        health = client.get("/health")
    assert in_band.status == 200 and len(in_band.events) == 1
    assert in_band.last["code"] == "unauthorized" and in_band.last["done"] is True
    assert plain.status == 401 and plain.json() == {"error": in_band.last["error"], "code": "unauthorized"}
    assert plain.headers["www-authenticate"] == "Bearer"
    assert health.status_code == 200, "only chat needs a token"
    assert claude.requests() == []


def test_the_reconnect_after_an_unauthorized_event_gets_204(secured_server: ServerProcess) -> None:
    # The refusal is not kept; its id alone says the client has its only event, token or not, so an
    # EventSource that does not close on the error is not brought back every few seconds forever.
    with httpx.Client(base_url=secured_server.url, timeout=30) as client:
        refused = ask_sse(client)
        again = client.get(CHAT, headers={**SSE, "Last-Event-ID": refused.events[0].id})
    assert refused.last["code"] == "unauthorized"
    assert again.status_code == 204 and again.content == b""


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_unauthorized_by_header_and_by_parameter(
    secured_server: ServerProcess, claude: FakeAnthropic, kind: str
) -> None:
    token = BAD_TOKENS[kind]()
    with httpx.Client(base_url=secured_server.url, timeout=30) as client:
        by_header = ask_plain(client, headers={"Authorization": f"Bearer {token}".strip()})
        by_parameter = ask_sse(client, access_token=token)
    assert by_header.status == 401 and by_header.json()["code"] == "unauthorized"
    assert by_parameter.last["code"] == "unauthorized"
    assert claude.requests() == []


def test_another_authorization_scheme_is_unauthorized(secured_server: ServerProcess) -> None:
    with httpx.Client(base_url=secured_server.url, timeout=30) as client:
        basic = ask_plain(client, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status == 401


@pytest.mark.parametrize("how", ["header", "parameter", "previous-secret"])
def test_a_valid_token_is_served(secured_server: ServerProcess, claude: FakeAnthropic, how: str) -> None:
    token = signed(AUTH_SECRET_PREVIOUS if how == "previous-secret" else AUTH_SECRET)
    with httpx.Client(base_url=secured_server.url, timeout=30) as client:
        if how == "header":
            reply = ask_sse(client, headers={"Authorization": f"Bearer {token}"})
        else:
            reply = ask_sse(client, access_token=token)
    assert reply.last.get("done") is True and "code" not in reply.last
    assert len(claude.requests()) == 1


def test_the_token_subject_personalises_and_the_parameter_is_ignored(
    secured_server: ServerProcess, claude: FakeAnthropic
) -> None:
    with httpx.Client(base_url=secured_server.url, timeout=30) as client:
        member = ask_sse(
            client, access_token=signed(AUTH_SECRET, sub=MEMBER_EMAIL), user_email="x@example.com"
        )
        claimed = ask_sse(
            client, access_token=signed(AUTH_SECRET, sub="guest@example.com"), user_email=MEMBER_EMAIL
        )
    assert "code" not in member.last and "code" not in claimed.last
    first, second = claude.requests()
    system_file = ROOT / "apps" / "zantara_rag" / "generation" / "prompts" / "system.md"
    assert first["body"]["system"][0] == {
        "type": "text",
        "text": system_file.read_text(encoding="utf-8").strip(),
    }
    assert MEMBER_NAME in first["body"]["system"][1]["text"]
    assert len(second["body"]["system"]) == 1, "a user_email parameter must not impersonate a team member"
