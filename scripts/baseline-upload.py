#!/usr/bin/env python3
"""The upload an administrator would script without cloudattach: tenant attach's device records,
read from devices.jsonl, posted as plain JSON in batches of 1,000, one request at a time.

    scripts/baseline-upload.py BASE SITE_DIR CREDENTIALS_JSON

BASE is the cloud's URL; CREDENTIALS_JSON the app credentials file `apply` keeps
(`.cloudattach/app-<tenant>-<endpoint>.json`: tenant_id, client_id, secret). The token comes the
documented way (OAuth client credentials, scope api://cloudattach/.default); the hierarchy is
the tenant's one attached hierarchy. The records are what tenant attach uploads: every device
with a client (collection scope is not applied), without its Defender and analytics blocks,
keyed by resource_id. Prints one JSON line: records, requests, seconds. Needs `requests`.
"""
import json
import sys
import time

import requests

BATCH = 1000


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    base, site, credentials = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    with open(credentials) as f:
        app = json.load(f)
    http = requests.Session()
    token = http.post(
        f"{base}/{app['tenant_id']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app["client_id"],
            "client_secret": app["secret"],
            "scope": "api://cloudattach/.default",
        },
    )
    token.raise_for_status()
    http.headers["Authorization"] = "Bearer " + token.json()["access_token"]
    hierarchies = http.get(f"{base}/api/v1/hierarchies")
    hierarchies.raise_for_status()
    hid = hierarchies.json()["value"][0]["hierarchy_id"]
    url = f"{base}/api/v1/hierarchies/{hid}/upload/devices"

    started = time.monotonic()
    records = requests_sent = 0
    batch = []

    def send():
        nonlocal requests_sent
        answer = http.post(url, json={"upserts": batch, "deletes": []})
        if not answer.ok:
            sys.exit(f"upload answered {answer.status_code}: {answer.text[:500]}")
        requests_sent += 1
        batch.clear()

    with open(f"{site}/devices.jsonl", encoding="utf-8-sig") as lines:
        for line in lines:
            if not line.strip():
                continue
            device = json.loads(line)
            if not device.get("client"):
                continue
            device.pop("defender", None)
            device.pop("analytics", None)
            batch.append({"key": str(device["resource_id"]), "record": device})
            records += 1
            if len(batch) == BATCH:
                send()
    if batch:
        send()
    print(json.dumps({"records": records, "requests": requests_sent,
                      "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
