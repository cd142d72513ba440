"""infra/ (Bicep) and azure.yaml, checked offline: Bicep's compiler cannot run here, so these read the files
for what matters when they deploy: every app setting the code reads is set, no secret leaves through an
output, the identity's roles are the ones setup grants, the Logic App gets the workflow as it is."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from registrations import setup
from registrations.settings import load

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
API = (INFRA / "app" / "api.bicep").read_text()
MAIN = (INFRA / "main.bicep").read_text()
LOGIC = (INFRA / "app" / "logicapp.bicep").read_text()

# Settings the code reads that the platform or a developer sets, never the template.
NOT_FOR_THE_TEMPLATE = {
    "IDENTITY_ENDPOINT": "App Service sets it for the managed identity",
    "MSI_ENDPOINT": "the older name App Service sets",
    "WEBSITE_AUTH_ENABLED": "App Service sets it when Easy Auth is on",
    "WEBSITE_HOSTNAME": "App Service sets it",
    "AZURE_FUNCTIONS_ENVIRONMENT": "the Functions host sets it (Production)",
    "AZURE_CLIENT_ID": "only for a user-assigned identity; the template's is system-assigned",
    "TLS_CA_FILE": "local development only (refused in production)",
    "REGISTRY_CONNECTION_STRING": "Azurite on loopback in Development only (refused in production)",
}
# Settings the template sets for the platform, not for the code.
FOR_THE_PLATFORM = {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential"}
_READ = re.compile(r"""(?:environ|env)(?:\.get\(|\[)\s*["']([A-Z][A-Za-z0-9_]+)["']|_(?:int|bool)\(env,\s*"([A-Z][A-Z0-9_]+)"|%([A-Z][A-Z0-9_]+)%""")


def settings_the_code_reads() -> set[str]:
    names: set[str] = set()
    for path in [ROOT / "function_app.py", *sorted((ROOT / "registrations").rglob("*.py"))]:
        for match in _READ.finditer(path.read_text()):
            names.add(next(g for g in match.groups() if g))
    return names


def bicep_block(text: str, opening: str) -> str:
    """The body of the `{ ... }` that follows `opening`."""
    start = text.index(opening) + len(opening)
    depth, i = 1, text.index("{", start) + 1
    begin = i
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[begin:i - 1]


def app_settings() -> dict[str, str]:
    body = bicep_block(API, "resource settings 'config' =")
    properties = bicep_block(body, "properties:")
    return dict(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*):\s*(.+?)\s*$", properties, re.MULTILINE))


def test_every_setting_the_code_reads_is_set_and_nothing_else():
    read = settings_the_code_reads()
    assert {"AZURE_TENANT_ID", "KEY_VAULT_URL", "DICOM_SERVICES", "SWEEP_SCHEDULE", "LOG_LEVEL"} <= read
    wanted = read - set(NOT_FOR_THE_TEMPLATE)
    set_ = set(app_settings()) - FOR_THE_PLATFORM
    assert sorted(wanted - set_) == [], "settings the code reads that infra/app/api.bicep does not set"
    assert sorted(set_ - read) == [], "settings infra/app/api.bicep sets that the code never reads"
    assert set(NOT_FOR_THE_TEMPLATE) <= read, "an exemption for a setting the code no longer reads"


def test_the_template_s_literal_defaults_are_valid_settings():
    """The literal values the template writes load as the function app would load them."""
    literal = {k: v.strip("'") for k, v in app_settings().items() if re.fullmatch(r"'[^'$]*'", v)}
    env = {**literal, "AZURE_TENANT_ID": "7d5b1f0e-3c2a-4e8b-9f61-0a2b3c4d5e6f",
           "KEY_VAULT_URL": "https://kv-x.vault.azure.net/",
           "DICOM_SERVICES": json.dumps({"prod": {"kind": "managed", "url": "https://ws-prod.dicom.azurehealthcareapis.com",
                                                  "resourceId": "/subscriptions/s/resourceGroups/g/providers/"
                                                                "Microsoft.HealthcareApis/workspaces/ws/dicomservices/prod"}})}
    settings = load(env)
    assert settings.name_prefix == "dicomreg" and settings.provisioning_deadline_seconds == 60


def outputs(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^output\s+(\w+)\s+\w+\s*=\s*(.+)$", text, re.MULTILINE)


def test_no_output_carries_a_secret():
    found = [(path.name, name, expression) for path in INFRA.rglob("*.bicep")
             for name, expression in outputs(path.read_text())]
    assert len(found) >= 10
    for file, name, expression in found:
        assert not re.search(r"(?i)listkeys|listsecrets|connectionstring|secret|password|key\b|functionkey|"
                             r"primaryKey|instrumentationkey", f"{name} {expression}"), (file, name)
    # The function key goes to the Logic App as a workflow parameter of type SecureString, and nowhere else.
    assert LOGIC.count("listKeys(") == 1 and "listKeys(" not in API + MAIN


def role_assignments(text: str) -> list[dict[str, str]]:
    found = []
    for match in re.finditer(r"resource \w+ 'Microsoft\.Authorization/roleAssignments@[^']+' = \{", text):
        body = bicep_block(text[match.start():], "= ")
        role = re.search(r"roleDefinitions',\s*(\w+)\)", body).group(1)
        condition = re.search(r"condition:\s*(\w+)", body)
        found.append({"scope": re.search(r"scope:\s*(\w+)", body).group(1), "role": role,
                      "condition": condition.group(1) if condition else None,
                      "principal": re.search(r"principalId:\s*(\S+)", body).group(1)})
    return found


def bicep_vars(text: str) -> dict[str, str]:
    return {name: value.replace("\\'", "'")
            for name, value in re.findall(r"^var (\w+) = '((?:[^'\\]|\\')*)'$", text, re.MULTILINE)}


def test_the_identity_s_roles_on_the_vault_are_the_ones_setup_grants():
    variables = bicep_vars(API)
    on_vault = {(variables[a["role"]], variables[a["condition"]] if a["condition"] else None)
                for a in role_assignments(API) if a["scope"] == "vault"}
    env = {"AZURE_TENANT_ID": "7d5b1f0e-3c2a-4e8b-9f61-0a2b3c4d5e6f", "KEY_VAULT_URL": "https://kv.vault.azure.net",
           "KEY_VAULT_RESOURCE_ID": "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/kv",
           "DICOM_SERVICES": json.dumps({"oss": {"kind": "oss", "url": "https://dicom.contoso.org",
                                                 "resourceRegistration": "dicom-oss-api"}})}
    wanted = {(r.role_id, r.condition) for r in setup.azure_roles(load(env))}
    assert on_vault == wanted
    assert all(a["principal"] == "functionApp.identity.principalId" for a in role_assignments(API))
    # and nothing but the vault, its own storage and its telemetry
    assert {a["scope"] for a in role_assignments(API)} == {"vault", "storage", "insights"}


def test_the_vault_is_in_rbac_mode_and_keeps_deleted_secrets():
    vault = bicep_block(API, "resource vault 'Microsoft.KeyVault/vaults@2023-07-01' =")
    assert "enableRbacAuthorization: true" in vault and "enablePurgeProtection: true" in vault
    assert "identity: { type: 'SystemAssigned' }" in bicep_block(API, "resource functionApp")
    assert "allowSharedKeyAccess: false" in API and "DisableLocalAuth: true" in API


def test_the_logic_app_gets_the_sample_workflow_and_every_parameter_it_declares():
    path = re.search(r"loadJsonContent\('([^']+)'\)", LOGIC).group(1)
    workflow = json.loads((INFRA / "app" / path).resolve().read_text())
    assert "definition: workflow.definition" in LOGIC
    given = set(re.findall(r"^\s{6}'?(\$?\w+)'?:\s*\{", bicep_block(LOGIC, "    parameters:"), re.MULTILINE))
    assert given == set(workflow["definition"]["parameters"])
    assert "identity: { type: 'SystemAssigned' }" in LOGIC


def test_main_parameters_and_azure_yaml_fit_the_template():
    declared = set(re.findall(r"^param (\w+) ", MAIN, re.MULTILINE))
    given = set(json.loads((INFRA / "main.parameters.json").read_text())["parameters"])
    required = {name for name in declared if not re.search(rf"^param {name} \w+ =", MAIN, re.MULTILINE)}
    assert required <= given <= declared
    azd = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert azd["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    [(name, service)] = azd["services"].items()
    assert service == {"project": ".", "language": "python", "host": "function"}
    assert f"'azd-service-name': '{name}'" in API  # how azd finds the app to deploy to
    for output in ("FUNCTION_PRINCIPAL_ID", "KEY_VAULT_RESOURCE_ID", "LOGIC_APP_PRINCIPAL_ID", "API_BASE"):
        assert output in dict(outputs(MAIN))
