"""Posts AuditEvents to medfl's monitor with SMART's `fhirclient` (a FHIR client library nobody
on the project wrote), and prints what it read back as one JSON object per line.

Usage: fhir_post.py create BASE_URL EVENTS_NDJSON
       fhir_post.py refusals BASE_URL EVENTS_NDJSON UNKNOWN_USER_EVENT_JSON

Run by tests/monitor.rs; `.ci/run` installs the library (pip install fhirclient).
"""

import json
import sys

import requests
from fhirclient.models.auditevent import AuditEvent
from fhirclient.models.bundle import Bundle
from fhirclient.models.operationoutcome import OperationOutcome
from fhirclient.server import FHIRServer


def emit(**kw):
    print(json.dumps(kw), flush=True)


def main():
    mode, base, events_file = sys.argv[1:4]
    server = FHIRServer(None, base_uri=base)
    with open(events_file) as f:
        events = [json.loads(line) for line in f if line.strip()]
    if mode == "create":
        create(server, events)
    else:
        with open(sys.argv[4]) as f:
            refusals(server, events, json.load(f))


def create(server, events):
    # Each event as the library creates a resource: validated against its R4 model, POSTed
    # to [base]/AuditEvent; the answer read as an OperationOutcome.
    for e in events:
        res = server.post_json("AuditEvent", AuditEvent(e).as_json())
        oo = OperationOutcome(res.json())
        issue = oo.issue[0]
        emit(kind="created", status=res.status_code,
             location=res.headers.get("Location"),
             verdict=issue.details.coding[0].code, severity=issue.severity)



def refusals(server, events, unknown):
    # An AuditEvent valid in FHIR but naming a user the hospital's staff directory lacks.
    try:
        AuditEvent(unknown).create(server)
        emit(kind="unknown-user", status=200)
    except requests.exceptions.HTTPError as err:
        oo = OperationOutcome(err.response.json())
        emit(kind="unknown-user", status=err.response.status_code,
             severity=oo.issue[0].severity, diagnostics=oo.issue[0].diagnostics)

    # Bundles of two known events and the unknown one: a transaction is refused whole, a
    # batch answers entry by entry.
    for kind in ["transaction", "batch"]:
        entries = [{"resource": r, "request": {"method": "POST", "url": "AuditEvent"}}
                   for r in [events[0], unknown, events[1]]]
        bundle = Bundle({"resourceType": "Bundle", "type": kind, "entry": entries})
        try:
            res = server.post_json("", bundle.as_json())
            answer = Bundle(res.json())
            emit(kind=kind, status=res.status_code, type=answer.type,
                 entries=[e.response.status for e in answer.entry])
        except requests.exceptions.HTTPError as err:
            oo = OperationOutcome(err.response.json())
            emit(kind=kind, status=err.response.status_code,
                 expression=oo.issue[0].expression, diagnostics=oo.issue[0].diagnostics)


if __name__ == "__main__":
    main()
