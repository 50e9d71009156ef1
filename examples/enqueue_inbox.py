"""Queue a 911 call by pushing it onto the Redis inbox (`pip install redis`).

    REDIS_URL=redis://localhost:6379/0 python3 enqueue_inbox.py

The `bridge` process moves it into the queue. An entry that is not a valid call is
kept as a dead letter `invalid` (see `dispatcher dlq list`), never dropped.
"""

import json
import os
import uuid

import redis

client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
entry = {  # the flat form; a call object as the seed sends it in `data` works too
    "caller": "Jane Doe",
    "location": "Route 68 / Joshua Rd",
    "description": "Two-car collision",
    "postal": "350",
    "plate": "8ABC123",
    "idempotencyKey": f"example-{uuid.uuid4()}",
}
waiting = client.lpush(os.environ.get("DISPATCHER_INBOX_KEY", "dispatcher:inbox"),
                       json.dumps(entry))
print(f"pushed {entry['idempotencyKey']} ({waiting} entries waiting for the bridge)")
