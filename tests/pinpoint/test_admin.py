"""Admin key pairs: every workspace, and CreateApp; a workspace's key may not create applications."""
from __future__ import annotations

import pytest

from tests.pinpoint.conftest import client_for, make_key


@pytest.fixture
def admin(running_api):
    return client_for(running_api, make_key(running_api.database_url, None))


def test_admin_lists_every_workspace_and_creates_apps(admin, pinpoint):
    created = admin.create_app(CreateApplicationRequest={"Name": "new-shop"})
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["ApplicationResponse"]["Id"] == "new-shop"
    assert {a["Id"] for a in admin.get_apps()["ApplicationsResponse"]["Item"]} == {"acme", "new-shop"}
    with pytest.raises(admin.exceptions.ConflictException):
        admin.create_app(CreateApplicationRequest={"Name": "acme"})
    # the new application is a workspace like any other: an admin reaches it, acme's key does not
    admin.update_endpoint(ApplicationId="new-shop", EndpointId="e1",
                          EndpointRequest={"ChannelType": "EMAIL", "Address": "e1@example.com"})
    assert admin.get_endpoint(ApplicationId="new-shop", EndpointId="e1")["EndpointResponse"]["ApplicationId"] == "new-shop"
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_endpoint(ApplicationId="new-shop", EndpointId="e1")


def test_admin_unknown_application_is_not_found(admin):
    with pytest.raises(admin.exceptions.NotFoundException):
        admin.get_app(ApplicationId="nowhere")


def test_a_workspace_key_may_not_create_apps(pinpoint):
    with pytest.raises(pinpoint.exceptions.ForbiddenException) as caught:
        pinpoint.create_app(CreateApplicationRequest={"Name": "sneaky"})
    assert "admin" in caught.value.response["Error"]["Message"]
    assert [a["Id"] for a in pinpoint.get_apps()["ApplicationsResponse"]["Item"]] == ["acme"]
