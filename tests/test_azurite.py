"""Azurite as the dev host starts it: the Table service, and the Blob service beside it when asked
(what AzureWebJobsStorage needs for a timer trigger under `func start`)."""

from __future__ import annotations

import httpx

from devhost.azurite import Azurite, free_port


def test_the_blob_service_runs_beside_the_table_service_when_asked() -> None:
    blob = free_port()
    with Azurite(blob_port=blob) as azurite:
        listing = httpx.get(f"http://127.0.0.1:{blob}/devstoreaccount1?comp=list")  # no credentials
        assert "x-ms-request-id" in listing.headers  # answered by Azurite's Blob service
        assert azurite.blob_process is not None and azurite.blob_process.poll() is None
    assert azurite.blob_process.poll() is not None  # stopped with the table service
    assert azurite.process is not None and azurite.process.poll() is not None
