"""End to end with a real DICOMweb server (Orthanc behind the local DICOM service fronts): a registration's
returned configuration, and nothing else, gets an msal token that dicomweb-client uses to store a pydicom-made
instance (STOW-RS), find it (QIDO-RS) and read back the same bytes (WADO-RS); the service refuses what the
registration's role does not allow."""

from __future__ import annotations

import io
from urllib.parse import quote

import pydicom
import pytest
import requests

from tests.support import confidential_app, create, dicom_instance, dicomweb, secret_client, service


def token_for(tenant, config: dict) -> str:
    """What a daemon does with its configuration: the secret from Key Vault, msal's client credentials."""
    secret = secret_client(tenant).get_secret(config["clientSecret"]["keyVaultSecretName"]).value
    result = confidential_app(tenant, config["clientId"], secret).acquire_token_for_client(config["scopes"])
    assert "access_token" in result, result
    return result["access_token"]


def part10(ds) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds)
    return out.getvalue()


def test_a_managed_writer_stores_finds_and_reads_back_the_same_bytes_and_a_reader_only_reads(api, tenant):
    writer = create(api, service("dicom-e2e-writer", access="writer"))["config"]
    reader = create(api, service("dicom-e2e-reader", access="reader"))["config"]
    base = writer["dicomService"]["baseUrl"]
    ds = dicom_instance("E2E^WRITER")

    stored = dicomweb(base, token_for(tenant, writer), tenant.ca_file)
    stored.store_instances([ds])
    found = stored.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    assert [study["0020000D"]["Value"][0] for study in found] == [ds.StudyInstanceUID]
    got = stored.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert part10(got) == part10(ds)

    reading = dicomweb(reader["dicomService"]["baseUrl"], token_for(tenant, reader), tenant.ca_file)
    assert reading.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    with pytest.raises(requests.HTTPError) as refused:
        reading.store_instances([dicom_instance("E2E^READER")])
    assert refused.value.response.status_code == 403


def test_a_removed_role_assignment_is_refused_by_the_service(api, tenant):
    reg = create(api, service("dicom-e2e-removed", access="reader"))
    token = token_for(tenant, reg["config"])
    client = dicomweb(reg["config"]["dicomService"]["baseUrl"], token, tenant.ca_file)
    assert isinstance(client.search_for_studies(limit=1), list)
    assignment = next(a for a in tenant.state()["roleAssignments"]
                      if a["properties"]["principalId"] == reg["servicePrincipalId"])
    _arm_delete(tenant, assignment["id"])
    with pytest.raises(requests.HTTPError) as refused:
        client.search_for_studies(limit=1)  # the same, still valid token
    assert refused.value.response.status_code == 403


def _arm_delete(tenant, assignment_id: str) -> None:
    from azure.identity import ManagedIdentityCredential

    from tests.support import ca_session

    token = ManagedIdentityCredential().get_token("https://management.azure.com/.default").token
    response = ca_session(tenant.ca_file, {"Authorization": f"Bearer {token}"}).delete(
        f"{tenant.arm_endpoint}{quote(assignment_id)}", params={"api-version": "2022-04-01"})
    assert response.status_code == 200, response.text
