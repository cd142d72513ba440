"""README's shell tour and the "Use the registration" scripts of docs/use-the-registration.md, run literally
against `make run`'s stack; the refusals of docs/permissions.md's policy table provoked.

The commands are read out of the documents (the ```sh blocks of the two sections, and each ```python block under
the file name its first line gives), so the documents cannot drift from what works. `python -m devhost run`
runs in a subprocess as `make run` starts it, on free ports and with its state in a temporary directory
(`DEVHOST_LOCAL_DIR`, and `API` for the host's address, are the only things set from outside); KEY and TOKEN
(and the DICOM step's IDENTITY_ENDPOINT, IDENTITY_HEADER and REQUESTS_CA_BUNDLE) are read off its banner, as a
newcomer pastes them. The public client's script asks for the address the
browser lands on: the test plays the browser (the local tenant signs its user in without a page).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from registrations.kinds import PLANS
from tests.support import free_base_port, free_port, service, settings_override

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = "urn:dicom-registrations:problem:"


def readme_section(title: str, document: str = "README.md") -> str:
    text = (ROOT / document).read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section, re.S | re.M)


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """`python -m devhost run` (what `make run` runs) until its banner is out; yields the banner and its env."""
    for tool in ("bash", "curl"):
        assert shutil.which(tool), f"README's commands need {tool}"
    local = tmp_path_factory.mktemp("make-run") / ".local"
    environment = {**os.environ, "DEVHOST_LOCAL_DIR": str(local), "PYTHONUNBUFFERED": "1"}
    for attempt in range(3):
        # Ports free a moment ago may be taken by another process before make run binds them (parallel
        # workers): make run says so in one line, and gets other ports.
        port, base = free_port(), free_base_port()
        process = subprocess.Popen([sys.executable, "-m", "devhost", "run", "--port", str(port), "--base-port",
                                    str(base)], cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            banner = read_until(process, "Ctrl-C stops", timeout=120)
            break
        except AssertionError as stopped:
            process.communicate(timeout=30)
            if "is in use by another program" not in str(stopped) or attempt == 2:
                raise
    try:
        yield {"banner": banner, "local": local, "api": f"http://127.0.0.1:{port}/api"}
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def read_until(process: subprocess.Popen, marker: str, *, timeout: float) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError("make run stopped:\n" + "".join(seen[-40:]))
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError("make run printed no banner:\n" + "".join(seen[-40:]))


def pasted(banner: str, name: str) -> str:
    """What the banner's `export NAME=…` sets, as a shell would. Written to a pipe (not a terminal), the banner
    holds no key or token itself, only the commands that read or fetch them: those are run, with bash."""
    literal = re.search(rf"^\s*export {name}='([^']*)'$", banner, re.M)
    if literal:
        return literal.group(1)
    assert f"export {name}=$(" in banner, f"the banner has no export {name} line:\n{banner}"
    lines, taking = [], False
    for line in banner.splitlines():
        taking = taking or line.strip().startswith(f"export {name}=$(")
        if taking:
            lines.append(line)
            if not line.endswith("\\"):
                break
    shell = subprocess.run(["bash", "-e", "-c", "\n".join(lines) + f'\nprintf %s "${name}"'], text=True,
                           capture_output=True, timeout=60)
    assert shell.returncode == 0 and shell.stdout, shell.stderr
    return shell.stdout


def run_shell(script: str, workdir: Path, stack: dict, *, browser_ca: Path | None = None,
              timeout: float = 240) -> str:
    """Run a README shell block with bash in `workdir`, with the banner's exports. A line of output
    holding an authorize URL is answered on stdin with the address the browser would land on."""
    environment = {**os.environ, **{name: pasted(stack["banner"], name) for name in (
                       "KEY", "TOKEN", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE")},
                   "API": stack["api"], "DEVHOST_LOCAL_DIR": str(stack["local"]),
                   "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(["bash", "-e", "-c", script], cwd=workdir, env=environment, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[str] = []
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:
            output.append(line)
            if "/oauth2/v2.0/authorize?" in line and browser_ca is not None:
                process.stdin.write(landing_address(line.strip(), browser_ca) + "\n")
                process.stdin.flush()
        process.wait(timeout=30)
    finally:
        watchdog.cancel()
    text = "".join(output)
    assert process.returncode == 0, text
    return text


def landing_address(auth_uri: str, ca_file: Path) -> str:
    """The browser: the seeded user signs in on the local tenant's pages (account, then the password the
    banner prints) and lands on the app's redirect URI."""
    from localtenant.person import sign_in
    from localtenant.seed import USER_PASSWORD
    result = sign_in(auth_uri, ca_file=str(ca_file), user="dicom.user@local.test", password=USER_PASSWORD)
    assert result.landing is not None, result
    return result.landing


@pytest.mark.slow(50)
def test_the_tour_runs_as_written(make_run, tmp_path):
    (blocks,) = [code_blocks(readme_section("A tour (after `make run`)"), "sh")]
    assert len(blocks) == 1
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    output = run_shell(blocks[0], tmp_path, make_run)
    assert output.count('"state": "ready"') == 6, output
    assert PROBLEM not in output, output
    assert "DICOM_CLIENT_ID=" in output  # the env config
    assert '"kind": "application"' in output  # the delete's report
    assert "stored and read back" in output and "same pixels: True" in output, output  # the DICOM study


@pytest.mark.slow(22)
def test_use_the_registration_scripts_get_dicom_tokens(make_run, tmp_path):
    section = readme_section("Use the registration", "docs/use-the-registration.md")
    (shell,) = code_blocks(section, "sh")
    scripts = {block.splitlines()[0].removeprefix("# ").split(":")[0]: block for block in code_blocks(section, "python")}
    assert set(scripts) == {"use_secret.py", "use_certificate.py", "use_public.py"}
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    output = run_shell(shell, tmp_path, make_run, browser_ca=make_run["local"] / "ca.pem")
    assert PROBLEM not in output, output
    for name in ("nightly-export", "ai-inference"):
        assert re.search(rf"{name}: a token for https://dicom.healthcareapis.azure.com/.default; "
                         r"the DICOM service lists \d+ studies$", output, re.M), output
    assert "desktop-viewer: a token for dicom.user@local.test" in output, output


# ------------------------------------------------------------------------------ README's policy table
POLICY_INTRO = "Policy, checked before anything is written."
REQUESTER, EVERYONE = "`Registrations.Request` callers", "everyone"


def policy_rows() -> list[tuple[str, str]]:
    """(the rule, whom it applies to) for each row of the policy table (docs/permissions.md)."""
    text = (ROOT / "docs" / "permissions.md").read_text()
    table = text[text.index(POLICY_INTRO):].split("\n\n")[1]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    return [(rule, whom) for rule, whom in rows]


def federated_service(name: str, issuer: str, **extra) -> dict:
    return service(name, credential={"kind": "federated", "issuer": issuer, "subject": f"repo:{name}", **extra})


Case = tuple[dict[str, "str | None"], dict]  # settings to send it under, a request that breaks the rule


def policy_cases(tenant, requester_holds: int) -> dict[str, list[Case]]:
    """For each rule README states, keyed by words of its row that name it and no other row, requests that
    break it. A row that no key names fails the test, and so does a key that names no row or several: a
    documented refusal must be shown to happen. How it is refused comes from the README: a `422` where the row
    says "otherwise `422`", else the table's `403` `policy`."""
    web = {"displayName": "Policy", "dicomService": "managed"}
    return {
        "`REQUESTER_ACCESS`: the access levels": [
            ({"REQUESTER_ACCESS": '{"managed": ["reader"]}'}, service("readme-pol-access", access="writer"))],
        "`MAX_REGISTRATIONS_PER_REQUESTER`: how many": [
            ({"MAX_REGISTRATIONS_PER_REQUESTER": str(requester_holds)}, service("readme-pol-max"))],
        "`type: resource` registrations": [
            ({}, {"type": "resource", "name": "dicom-oss-api", "displayName": "API", "dicomService": "oss"}),
            ({}, {"type": "resource", "name": "readme-pol-api", "displayName": "API", "dicomService": "oss"}),
        ],
        "federated credentials need `ALLOWED_FEDERATED_ISSUERS`": [
            ({"ALLOWED_FEDERATED_ISSUERS": None}, federated_service("readme-pol-fed", tenant.federated_issuer)),
            ({"ALLOWED_FEDERATED_ISSUERS": tenant.federated_issuer},
             federated_service("readme-pol-fed", tenant.federated_issuer, audience="api://elsewhere")),
        ],
        "a federated credential's `issuer`": [
            ({"ALLOWED_FEDERATED_ISSUERS": "https://issuer.allowed.example.org"},
             federated_service("readme-pol-iss", tenant.federated_issuer))],
        "redirect URIs must use a host in `ALLOWED_REDIRECT_HOSTS`": [
            ({"ALLOWED_REDIRECT_HOSTS": "portal.example.org"},
             {"type": "confidential", "name": "readme-pol-redirect", **web,
              "redirectUris": ["https://elsewhere.example.net/cb"]}),
            ({"ALLOWED_REDIRECT_HOSTS": "portal.example.org"},
             {"type": "public", "name": "readme-pol-redirect", **web, "redirectUris": ["https://elsewhere.example.net/"]}),
        ],
        "`secretReaders` needs `KEY_VAULT_RESOURCE_ID`": [
            ({"KEY_VAULT_RESOURCE_ID": None},
             service("readme-pol-readers", secretReaders=[tenant.seed.reader_client.object_id]))],
        "a custom `identifierUri`": [
            ({}, {"type": "resource", "name": "dicom-oss-api", "displayName": "API", "dicomService": "oss",
                  "identifierUri": "api://elsewhere/dicom"})],
        "public and confidential clients need `ALLOWED_REDIRECT_HOSTS`": [
            ({"ALLOWED_REDIRECT_HOSTS": None},
             {"type": "confidential", "name": "readme-pol-hosts", **web, "redirectUris": ["https://portal.example.org/cb"]}),
        ],
        "a custom-scheme redirect URI": [
            ({"ALLOWED_REDIRECT_HOSTS": "evil.example.net"},
             {"type": "public", "name": "readme-pol-scheme", **web, "platform": "mobile",
              "redirectUris": ["com.evil.app://evil.example.net/cb"]}),
        ],
        "a name `DICOM_SERVICES` gives": [({}, service("dicom-oss-api"))],
    }


def test_every_refusal_in_the_readme_policy_table_happens_as_documented(as_, tenant):
    mine = as_["requester"].post("/registrations", json=service("readme-pol-mine"))
    assert mine.status_code in (200, 201), mine.text
    listed = as_["requester"].get("/registrations", params={"top": "100"}).json()
    assert "nextLink" not in listed
    cases = policy_cases(tenant, requester_holds=len(listed["value"]))
    rows = policy_rows()
    assert rows, "README has no policy table"
    for key in cases:
        assert sum(key in rule for rule, _ in rows) == 1, f"{key!r} names {sum(key in r for r, _ in rows)} rows"
    for rule, whom in rows:
        keys = [key for key in cases if key in rule]
        assert keys, f"README's policy rule {rule!r} has no case in this test"
        expected = (422, "validation") if "otherwise `422`" in rule else (403, "policy")
        assert whom in (REQUESTER, EVERYONE), f"unknown 'applies to' {whom!r}"
        for overrides, body in cases[keys[0]]:
            # Everyone's rules bind admins too; a requester asking for a type only admins create meets that
            # rule first, so only admins show the others on such a type.
            callers = ["requester"] if whom == REQUESTER else ["admin"] + (
                [] if PLANS[body["type"]].admin_only else ["requester"])
            for caller in callers:
                before = {app.get("uniqueName") for app in tenant.state()["applications"]}
                with settings_override(**overrides):
                    response = as_[caller].post("/registrations", json=body)
                assert (response.status_code, response.json().get("type", "").rsplit(":", 1)[-1]) == expected, \
                    (rule, caller, response.text)
                assert {app.get("uniqueName") for app in tenant.state()["applications"]} == before, rule
    as_["admin"].delete("/registrations/readme-pol-mine")
