"""`tidings demo`: bring the embedded stack up, seed a workspace through the public API, show what happened.

Everything goes through HTTP with a workspace key, exactly as a user's own integration would.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import random
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx

from tidings.engine.platform.config import Settings
from tidings.engine.ops.devstack import DevStack, Ports

FIRST = ["Ana", "Ben", "Chloé", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jun", "Kemi", "Luis"]
CITIES = [("US", "Boston", 42.36, -71.06), ("FR", "Paris", 48.86, 2.35), ("JP", "Tokyo", 35.68, 139.69),
          ("GB", "London", 51.51, -0.13), ("BR", "São Paulo", -23.55, -46.63)]
PLANS = ["free", "trial", "pro"]
EVENTS = ["app_open", "view_item", "add_to_cart", "purchase"]
JOURNEYS = Path(__file__).resolve().parents[2] / "journeys"
DEMO_JOURNEYS = ["launch-announcement", "welcome"]


def sample_customers(n: int = 60, seed: int = 7) -> tuple[list[dict], list[dict], list[dict]]:
    rnd = random.Random(seed)
    zone = daytime_zone()
    users, endpoints, events = [], [], []
    for i in range(n):
        uid = f"demo-{i:03d}"
        country, city, lat, lon = rnd.choice(CITIES)
        users.append({"user_id": uid, "attributes": {"first_name": rnd.choice(FIRST), "plan": rnd.choice(PLANS),
                                                     "interests": rnd.sample(["jazz", "golf", "books", "travel"], 2)},
                      "metrics": {"lifetime_value": round(rnd.uniform(0, 500), 2)}, "timezone": zone, "locale": "en"})
        endpoints.append({"endpoint_id": f"{uid}-email", "user_id": uid, "channel": "EMAIL",
                          "address": f"{uid}@example.com", "location": {"country": country, "city": city,
                                                                         "latitude": lat, "longitude": lon}})
        if i % 3 == 0:
            endpoints.append({"endpoint_id": f"{uid}-sms", "user_id": uid, "channel": "SMS",
                              "address": f"+1415555{i:04d}"})
        for j in range(rnd.randint(1, 6)):
            events.append({"id": f"{uid}-ev{j}", "user_id": uid, "name": rnd.choice(EVENTS),
                           "attributes": {"source": rnd.choice(["ios", "web"])}})

    return users, endpoints, events


def sample_signups(wave: int) -> list[dict]:
    """A quarter of the customers sign up; trial sign-ups enter the welcome journey. Each demo run on the
    same state is a new wave (new event ids)."""
    users = sample_customers()[0]
    return [{"id": f"{u['user_id']}-signup-{wave}", "user_id": u["user_id"], "name": "signed_up",
             "attributes": {"plan": u["attributes"]["plan"]}} for u in users[::4]]


def daytime_zone() -> str:
    """A time zone where it is now between 10:00 and 16:00, so the welcome journey's quiet hours
    (21:00-08:00 in the customer's zone) never hold the demo's mail, whenever it is run."""
    hour = datetime.now(timezone.utc).hour
    offset = (13 - hour + 12) % 24 - 12  # UTC+offset is about 13:00 now
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT signs are inverted by POSIX convention


async def seed(client: httpx.AsyncClient) -> dict:
    users, endpoints, events = sample_customers()
    out = {}
    for path, body in (("/v1/users/batch", {"items": users}), ("/v1/endpoints/batch", {"items": endpoints}),
                       ("/v1/events", {"events": events})):
        r = await client.post(path, json=body)
        r.raise_for_status()
        out[path] = r.json()
    return out


async def show(client: httpx.AsyncClient) -> None:
    first = (await client.get("/v1/users/demo-000")).json()
    print(f"\nCustomer demo-000: {first['attributes']['first_name']}, plan {first['attributes']['plan']}, "
          f"{len(first['endpoints'])} endpoint(s): " + ", ".join(f"{e['channel']} {e['address']}" for e in first["endpoints"]))
    counts: Counter[str] = Counter()
    cursor = None
    while True:
        page = (await client.get("/v1/events", params={"limit": 1000, **({"cursor": cursor} if cursor else {})})).json()
        counts.update(e["name"] for e in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    print("Events by name: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))


async def apply_examples(client: httpx.AsyncClient, settings: Settings) -> None:
    """The journeys/ folder, as `tidings apply --activate journeys/` would do it."""
    from tidings.engine.journeys.apply import apply
    from tidings.engine.platform.db import make_engine
    from tidings.engine.workspaces.service import ensure_workspace
    from tidings.engine.wiring import wire

    wire()
    db = make_engine(settings.database_url)
    try:
        # in a thread: the API may serve from this event loop (tidings demo, the console tests), and applying
        # evaluates segments over every customer
        changes = await asyncio.to_thread(lambda: apply(db, ensure_workspace(db, "dev"), JOURNEYS))
    finally:
        db.dispose()
    print("\nApplied journeys/: " + ", ".join(f"{c.kind.lower()} {c.id} ({c.outcome})" for c in changes))
    for journey_id in DEMO_JOURNEYS:
        r = await client.post(f"/v1/journeys/{journey_id}/activate")
        r.raise_for_status()
        print(f"Activated {journey_id} (v{r.json()['active_version']})")


async def wait_for_mail(folder: Path, expected: int, timeout: float = 90) -> int:
    """Poll the SMTP sink's folder until the journeys' mails have arrived (or the time is up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    count = 0
    while asyncio.get_running_loop().time() < deadline:
        count = len(list(folder.glob("*.eml")))
        if count >= expected:
            break
        await asyncio.sleep(0.25)
    return count


async def show_journeys(client: httpx.AsyncClient, folder: Path) -> None:
    await asyncio.sleep(1)  # the broadcast cohort records its last step just after its mail is out
    for journey_id in DEMO_JOURNEYS:
        runs = (await client.get(f"/v1/journeys/{journey_id}/runs", params={"limit": 1000})).json()
        by_status = Counter(r["status"] for r in runs)
        steps = Counter(r["current_step"] for r in runs if r["status"] == "active")
        print(f"Journey {journey_id}: {len(runs)} customers entered; " +
              ", ".join(f"{n} {status}" for status, n in sorted(by_status.items())) +
              "".join(f" ({n} at step {step})" for step, n in sorted(steps.items())))
    mails = sorted(folder.glob("*.eml"))
    if mails:
        msg = email.message_from_bytes(mails[-1].read_bytes(), policy=email.policy.default)
        print(f"Last mail in the sink: to {msg['To']}: {msg['Subject']!r}")


async def run_demo(settings: Settings) -> int:
    stack = DevStack(settings, Ports.free())
    await stack.start()
    try:
        print(stack.banner())
        async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.dev_key}"},
                                     timeout=60) as client:
            before = len(list(stack.mail_folder.glob("*.eml")))
            seeded = await seed(client)
            print(f"\nSeeded workspace 'dev': {seeded['/v1/users/batch']['written']} users, "
                  f"{seeded['/v1/endpoints/batch']['written']} endpoints, "
                  f"{seeded['/v1/events']['stored']} new events ({seeded['/v1/events']['duplicates']} already stored)")
            await show(client)
            await apply_examples(client, stack.settings)
            segments = {s["id"]: s["size"] for s in (await client.get("/v1/segments")).json()["items"]}
            print("Segments: " + ", ".join(f"{sid} {size}" for sid, size in sorted(segments.items())))
            # Sign-ups arrive after activation, as they would in production: the welcome journey enters them.
            signups = sample_signups(wave=before)
            await client.post("/v1/events", json={"events": signups})
            trial_signups = sum(1 for e in signups if e["attributes"]["plan"] == "trial")
            expected = before + segments.get("all-users", 0) + trial_signups
            got = await wait_for_mail(stack.mail_folder, expected)
            print(f"\nMail in the local SMTP sink: {got - before} new "
                  f"({segments.get('all-users', 0)} announcements + {trial_signups} welcome mails expected), "
                  f"kept in {stack.mail_folder}")
            await show_journeys(client, stack.mail_folder)
        print(f"\nThe state is kept in {settings.home}; `tidings dev` serves it with the web UI.")
        return 0 if got >= expected else 1
    finally:
        await stack.stop()
