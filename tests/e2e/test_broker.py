"""A broker asks on a person's behalf (an approval workflow's identity, app role Registrations.Broker, naming the
person in Requested-For); nobody else may name someone, so a requester cannot claim to be another."""

from __future__ import annotations

import pytest

from tests.support import PROBLEM_TYPE_BASE, api_client, api_token, objects_named, service

PERSON = "Requested-For"


@pytest.fixture(scope="module")
def broker(host, tenant):
    with api_client(host, api_token(tenant, tenant.seed.broker_client)) as client:
        yield client


def refused(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["type"] == PROBLEM_TYPE_BASE + kind
    return problem


def test_a_requester_cannot_claim_to_be_someone_else(as_, tenant):
    someone = tenant.seed.requester_client_b.object_id
    problem = refused(as_["requester"].post("/registrations", json=service("broker-claim"),
                                            headers={PERSON: someone}), 403, "forbidden")
    assert problem["requiredRoles"] == ["Registrations.Broker"]
    refused(as_["admin"].get("/registrations", headers={PERSON: someone}), 403, "forbidden")  # admins neither
    assert objects_named(tenant, "broker-claim")["applications"] == []


def test_a_broker_acts_only_for_someone_and_only_as_a_requester(broker, as_, tenant):
    refused(broker.post("/registrations", json=service("broker-self")), 403, "forbidden")
    refused(broker.get("/registrations"), 403, "forbidden")
    problem = refused(broker.get("/registrations", headers={PERSON: "not-an-object-id"}), 422, "validation")
    assert problem["errors"][0]["loc"] == ["header", PERSON]
    person = tenant.seed.requester_client_b.object_id
    # Acting for a person it holds Registrations.Request only: what that person may not do, it may not either.
    refused(broker.get("/reports/capacity", headers={PERSON: person}), 403, "forbidden")
    refused(broker.post("/registrations", json=service("broker-writer", access="writer"), headers={PERSON: person}),
            403, "policy")


def test_what_a_broker_made_for_a_person_is_theirs_and_no_one_else_s(broker, as_, tenant):
    person = tenant.seed.requester_client_b.object_id
    made = broker.post("/registrations", json=service("broker-made"), headers={PERSON: person.upper()})
    assert made.status_code == 201, made.text
    assert made.json()["requestedBy"] == person
    assert as_["requester_b"].get("/registrations/broker-made").status_code == 200
    assert as_["requester"].get("/registrations/broker-made").status_code == 404
    # For another person the broker sees nothing of it either.
    other = tenant.seed.requester_client.object_id
    assert broker.get("/registrations/broker-made", headers={PERSON: other}).status_code == 404
    assert as_["requester_b"].delete("/registrations/broker-made").status_code == 200


def test_a_broker_cannot_make_a_registration_for_nobody(broker, tenant):
    """The person a broker names must exist in this tenant (a user, or a workload's service principal): a
    registration made for an object id nobody holds could never be seen or deleted by its requester. A 422
    naming the header, and nothing written. Breaks if the create takes the header's object id on trust."""
    nobody = "0badc0de-1111-4222-8333-444455556666"
    problem = refused(broker.post("/registrations", json=service("broker-nobody"), headers={PERSON: nobody}),
                      422, "validation")
    assert problem["errors"][0]["loc"] == ["header", PERSON] and nobody in problem["detail"], problem
    assert objects_named(tenant, "broker-nobody")["applications"] == []
    assert not [r for r in tenant.registry_rows() if r["RowKey"] == "reg:broker-nobody"]
    group = tenant.seed.group.object_id  # a group cannot sign in and call with a token of its own
    problem = refused(broker.post("/registrations", json=service("broker-group"), headers={PERSON: group}), 422,
                      "validation")
    assert "of type group" in problem["detail"], problem
    # A person of this tenant is a requester a broker may name.
    person = tenant.seed.user.object_id
    made = broker.post("/registrations", json=service("broker-person"), headers={PERSON: person})
    assert made.status_code == 201 and made.json()["requestedBy"] == person, made.text
    assert broker.delete("/registrations/broker-person", headers={PERSON: person}).status_code == 200
