"""Real identity providers for the sign-in tests: `oidc-provider` from the npm registry,
run with Node (tests/identity/oidc_provider.mjs). The package is installed once into a
cache directory outside the repository (IOT_TEST_NODE_CACHE, default
~/.cache/kommune-iot-tests), never committed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.processes import free_port, wait_for_port

OIDC_PROVIDER_VERSION = "9.13.3"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")


def node_unavailable() -> str | None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "Node.js and npm are needed to run the oidc-provider identity provider"
    return None


def provider_package_dir() -> Path:
    """A directory with oidc-provider installed (npm install on first use)."""
    base = Path(os.environ.get("IOT_TEST_NODE_CACHE", Path.home() / ".cache" / "kommune-iot-tests"))
    directory = base / f"oidc-provider-{OIDC_PROVIDER_VERSION}"
    if not (directory / "node_modules" / "oidc-provider" / "package.json").exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(directory),
             f"oidc-provider@{OIDC_PROVIDER_VERSION}"],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    # ESM resolves packages next to the script, so the script runs from that directory.
    shutil.copy(SCRIPT, directory / SCRIPT.name)
    return directory


def new_signing_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict]:
    """An RSA key and its private JWK (for the provider's configuration)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return key, jwk


@dataclass
class IdentityProvider:
    """One running oidc-provider: its issuer, client and the users it knows."""

    issuer: str
    client_id: str
    client_secret: str
    signing_key: rsa.RSAPrivateKey
    kid: str
    users: dict[str, dict]
    process: subprocess.Popen = field(repr=False)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def sign(self, claims: dict, kid: str | None = None) -> str:
        """An ID token signed with this provider's real key (for tests of the checks)."""
        return jwt.encode(claims, self.signing_key, algorithm="RS256",
                          headers={"kid": kid or self.kid})  # fmt: skip


def start_provider(
    package_dir: Path,
    name: str,
    redirect_uris: list[str],
    users: dict[str, dict],
    workdir: Path | None = None,
) -> IdentityProvider:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    kid = f"{name}-key-1"
    key, jwk = new_signing_key(kid)
    client_id, client_secret = f"kommune-iot-{name}", f"secret-of-{name}"
    config = {
        "issuer": issuer,
        "port": port,
        "jwks": {"keys": [jwk]},
        "clients": [
            {
                "client_id": client_id,
                "client_secret": client_secret,
                "redirect_uris": redirect_uris,
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        ],
        "users": users,
    }
    directory = Path(workdir or tempfile.mkdtemp(prefix=f"idp-{name}-"))
    config_file = directory / "config.json"
    config_file.write_text(json.dumps(config))
    log = (directory / "provider.log").open("w")
    process = subprocess.Popen(
        ["node", str(package_dir / SCRIPT.name), str(config_file)],
        cwd=package_dir, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=20)
    except TimeoutError:
        process.kill()
        raise RuntimeError((directory / "provider.log").read_text()) from None
    return IdentityProvider(issuer, client_id, client_secret, key, kid, users, process)


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.IGNORECASE)


def complete_sign_in_at_provider(authorize_url: str, login: str) -> str:
    """Sign in as `login` at the provider the way a person does (login form, consent form)
    and return the URL the provider sends the browser back to (our callback)."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        url = authorize_url
        for _ in range(20):
            response = browser.get(url)
            if response.status_code in (302, 303):
                url = urljoin(url, response.headers["location"])
                if not url.startswith(origin):
                    return url
                continue
            assert response.status_code == 200, response.text
            action = _FORM.search(response.text)
            assert action is not None, response.text
            form = (
                {"prompt": "login", "login": login, "password": "any"}
                if 'name="login"' in response.text
                else {"prompt": "consent"}
            )
            posted = browser.post(urljoin(url, action.group(1).replace("&amp;", "&")), data=form)
            assert posted.status_code in (302, 303), posted.text
            url = urljoin(url, posted.headers["location"])
            if not url.startswith(origin):
                return url
    raise AssertionError("the provider never sent the browser back")
