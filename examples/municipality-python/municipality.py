"""A municipality's (保険者) integration with kiban, written from docs/integration.md
and docs/asyncapi.json alone.

It onboards the insurer through the federation's route (POST /v1/insurers),
reports its rollout, back-fills another person's application of last year, sends
one person's whole certification, two certificates and
a move, five bad messages, and re-sends one message to show that nothing is
recorded twice. Every receipt is checked. Exit status 0 when every check held.

    python municipality.py --nats-url nats://127.0.0.1:4222 \
        --api https://127.0.0.1:8443 --certs ./kiban-data/certs
"""

import argparse
import asyncio
import datetime
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid

import nats

INSURER = "131016"
PERSON = "0000012345"
HISTORY_PERSON = "0000054321"
RECEIPT_TIMEOUT_S = 30


def uuid7() -> str:
    """A UUID v7 (docs/integration.md: v7 recommended): 48 bits of Unix
    milliseconds, then random bits, with the version and variant set."""
    millis = int(time.time() * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def onboard(api: str, certs: str) -> None:
    """POST /v1/insurers with the federation's client certificate."""
    context = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
    context.load_cert_chain(os.path.join(certs, "federation.pem"))
    request = urllib.request.Request(
        f"{api}/v1/insurers",
        data=json.dumps({"insurer": INSURER}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": uuid7()},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            answer = json.load(response)
            check(response.status == 201, f"onboarding answered {response.status}")
            print(f"onboarded {INSURER}: positions {answer['positions']}")
    except urllib.error.HTTPError as error:
        fail(f"onboarding refused: {error.code} {error.read().decode()}")


failures = []


def check(condition: bool, what: str) -> None:
    if not condition:
        failures.append(what)
        print(f"FAILED: {what}", file=sys.stderr)


def fail(what: str) -> None:
    print(f"FAILED: {what}", file=sys.stderr)
    sys.exit(1)


class Municipality:
    """Publishes status messages and waits for their receipts."""

    def __init__(self, client):
        self.client = client
        self.js = client.jetstream()
        self.receipts = {}
        self.arrived = asyncio.Condition()

    async def start(self) -> None:
        # Subscribe to the receipts before publishing (docs/integration.md).
        await self.client.subscribe(f"kiban.receipts.{INSURER}", cb=self.on_receipt)
        await self.client.flush()

    async def on_receipt(self, message) -> None:
        receipt = json.loads(message.data)
        async with self.arrived:
            self.receipts.setdefault(receipt["event_id"], []).append(receipt)
            self.arrived.notify_all()

    async def receipt(self, event_id: str, count: int = 1) -> dict:
        async def arrived():
            async with self.arrived:
                await self.arrived.wait_for(
                    lambda: len(self.receipts.get(event_id, [])) >= count
                )
                return self.receipts[event_id][count - 1]

        try:
            return await asyncio.wait_for(arrived(), RECEIPT_TIMEOUT_S)
        except asyncio.TimeoutError:
            fail(f"no receipt for {event_id} within {RECEIPT_TIMEOUT_S} s")

    async def publish_raw(self, subject: str, body: bytes, msg_id: str) -> None:
        await self.js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})

    async def send(self, message: dict, count: int = 1) -> dict:
        subject = f"kiban.ingest.{INSURER}.{message['kind']}"
        await self.publish_raw(subject, json.dumps(message).encode(), message["event_id"])
        return await self.receipt(message["event_id"], count)

    async def accepted(self, message: dict) -> list:
        receipt = await self.send(message)
        check(
            receipt["status"] == "accepted",
            f"{message['kind']} not accepted: {receipt}",
        )
        print(f"{message['kind']}: accepted at {receipt.get('positions')}")
        return receipt.get("positions", [])

    async def rejected(self, message: dict, code: str) -> None:
        receipt = await self.send(message)
        check(
            receipt["status"] == "rejected" and receipt.get("code") == code,
            f"{message['kind']}: expected {code}, got {receipt}",
        )
        print(f"{message['kind']}: rejected with {receipt.get('code')} as expected")


def message(
    kind: str,
    body: dict,
    insured: bool = True,
    application=None,
    person: str = PERSON,
    occurred_at: str = None,
) -> dict:
    now = occurred_at or datetime.datetime.now(datetime.timezone.utc).isoformat()
    out = {"event_id": uuid7(), "kind": kind, "insurer": INSURER, "occurred_at": now}
    if insured:
        out["insured"] = person
    if application is not None:
        out["application"] = application
    out["body"] = body
    return out


async def run(nats_url: str, api: str, certs: str) -> None:
    onboard(api, certs)
    client = await nats.connect(nats_url)
    municipality = Municipality(client)
    await municipality.start()
    today = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=9))).date()
    day = today.isoformat()

    # The insurer's rollout: standardisation, then data transmission (sharing on).
    await municipality.accepted(
        message("insurer.standardisation_completed", {"completed_on": day}, insured=False)
    )
    await municipality.accepted(
        message("insurer.data_transmission_completed", {"completed_on": day}, insured=False)
    )

    # History (docs/integration.md "Back-filling history"): another person's
    # application of 400 days ago, filed and withdrawn ten days later, loaded
    # with each fact's own occurred_at between backfill_started and
    # backfill_completed, so no timer judges the filing before its end arrives.
    past = today - datetime.timedelta(days=400)
    await municipality.accepted(message("insurer.backfill_started", {}, insured=False))
    for kind, body, days in [
        ("certification.filed",
         {"kind": "new", "applicant": {"by": "person"}, "applied_on": past.isoformat()}, 0),
        ("certification.withdrawn", {"reason": None}, 10),
    ]:
        at = f"{(past + datetime.timedelta(days=days)).isoformat()}T10:00:00+09:00"
        await municipality.accepted(
            message(kind, body, application=1, person=HISTORY_PERSON, occurred_at=at)
        )
    await municipality.accepted(message("insurer.backfill_completed", {}, insured=False))

    # One person's whole certification, in order.
    document = {
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "media_type": "application/pdf",
        "size_bytes": 48213,
    }
    filed = message(
        "certification.filed",
        {"kind": "new", "applicant": {"by": "person"}, "applied_on": day},
        application=1,
    )
    filed_positions = await municipality.accepted(filed)
    for kind, body in [
        ("certification.investigation_scheduled", {"scheduled_on": day}),
        ("certification.investigation_completed", {"investigation_sheet": document}),
        ("certification.opinion_requested", {"institution": "1310000001"}),
        ("certification.opinion_received", {"institution": "1310000001", "opinion": document}),
        ("certification.primary_judgment_recorded", {"level": "care_2"}),
        ("certification.secondary_judgment_recorded", {"level": "care_2"}),
    ]:
        await municipality.accepted(message(kind, body, application=1))
    decided = await municipality.accepted(
        message("certification.decided", {"level": "care_2", "validity": None}, application=1)
    )
    # A decision is recorded on the application and on the person.
    check(len(decided) == 2, f"the decision recorded {decided}, not two events")

    # Certificates and a move (a personal field goes as {"plain": ...}).
    await municipality.accepted(
        message("insured.copayment_certificate_issued", {"ratio": 1, "valid_from": day})
    )
    await municipality.accepted(
        message(
            "insured.cost_limit_certificate_issued",
            {"stage": "stage_2", "applied_on": day},
        )
    )
    await municipality.accepted(
        message(
            "insured.moved_house",
            {"moved_on": day, "address": {"plain": "東京都千代田区霞が関1-2-3"}},
        )
    )

    # Five bad messages, each with its code.
    broken_id = uuid7()
    await municipality.publish_raw(
        f"kiban.ingest.{INSURER}.certification.filed", b"{not json", broken_id
    )
    receipt = await municipality.receipt(broken_id)
    check(receipt.get("code") == "malformed_json", f"not JSON: {receipt}")
    print("not JSON: rejected with malformed_json as expected")

    mismatched = message("insured.moved_house", {"moved_on": day})
    await municipality.publish_raw(
        f"kiban.ingest.{INSURER}.insured.moved_house",
        json.dumps(mismatched).encode(),
        uuid7(),
    )
    receipt = await municipality.receipt(mismatched["event_id"])
    check(receipt.get("code") == "msg_id_mismatch", f"header mismatch: {receipt}")
    print("Nats-Msg-Id mismatch: rejected with msg_id_mismatch as expected")

    await municipality.rejected(message("certification.teleported", {}), "unknown_kind")
    await municipality.rejected(
        message(
            "certification.decided",
            {"level": "care_2", "validity": None, "decided_on": day},
            application=1,
        ),
        "invalid_body",
    )
    await municipality.rejected(
        message("certification.decided", {"level": "care_2", "validity": None}, application=2),
        "application_not_filed",
    )

    # Re-sending a message is harmless: the same receipt, nothing recorded twice.
    # JetStream drops a repeat of a Nats-Msg-Id within 5 s (docs/integration.md,
    # "Re-sending"), so a deliberate re-send comes later than that.
    await asyncio.sleep(6)
    again = await municipality.send(filed, count=2)
    check(
        again["status"] == "accepted" and again.get("positions") == filed_positions,
        f"the re-sent filing answered {again}, not {filed_positions}",
    )
    print(f"re-sent certification.filed: the same positions {again.get('positions')}")
    await client.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--api", required=True, help="kiban's HTTPS base URL")
    parser.add_argument("--certs", required=True, help="directory with ca.pem and federation.pem")
    args = parser.parse_args()
    asyncio.run(run(args.nats_url, args.api, args.certs))
    if failures:
        print(f"{len(failures)} checks failed", file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
