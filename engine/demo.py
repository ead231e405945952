"""`tidings demo`: bring the embedded stack up, seed a workspace through the public API, show what happened.

Everything goes through HTTP with a workspace key, exactly as a user's own integration would.
"""
from __future__ import annotations

import random
from collections import Counter

import httpx

from engine.config import Settings
from engine.devstack import DevStack, Ports

FIRST = ["Ana", "Ben", "Chloé", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jun", "Kemi", "Luis"]
CITIES = [("US", "Boston", 42.36, -71.06), ("FR", "Paris", 48.86, 2.35), ("JP", "Tokyo", 35.68, 139.69),
          ("GB", "London", 51.51, -0.13), ("BR", "São Paulo", -23.55, -46.63)]
PLANS = ["free", "trial", "pro"]
EVENTS = ["app_open", "view_item", "add_to_cart", "purchase"]


def sample_customers(n: int = 60, seed: int = 7) -> tuple[list[dict], list[dict], list[dict]]:
    rnd = random.Random(seed)
    users, endpoints, events = [], [], []
    for i in range(n):
        uid = f"demo-{i:03d}"
        country, city, lat, lon = rnd.choice(CITIES)
        users.append({"user_id": uid, "attributes": {"first_name": rnd.choice(FIRST), "plan": rnd.choice(PLANS),
                                                     "interests": rnd.sample(["jazz", "golf", "books", "travel"], 2)},
                      "metrics": {"lifetime_value": round(rnd.uniform(0, 500), 2)}, "timezone": "UTC", "locale": "en"})
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


async def run_demo(settings: Settings) -> int:
    stack = DevStack(settings, Ports.free())
    await stack.start()
    try:
        print(stack.banner())
        async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.dev_key}"},
                                     timeout=60) as client:
            seeded = await seed(client)
            print(f"\nSeeded workspace 'dev': {seeded['/v1/users/batch']['written']} users, "
                  f"{seeded['/v1/endpoints/batch']['written']} endpoints, "
                  f"{seeded['/v1/events']['stored']} new events ({seeded['/v1/events']['duplicates']} already stored)")
            await show(client)
        print(f"\nThe state is kept in {settings.home}; `tidings dev` serves it with the web UI.")
        return 0
    finally:
        await stack.stop()
