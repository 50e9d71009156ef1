"""Queue a 911 call through the dispatcher's HTTP door. Standard library only.

    DISPATCHER_URL=http://127.0.0.1:8000 SONORAN_COMMUNITY_ID=... SONORAN_API_KEY=... \
        python3 enqueue_http.py

The body is the CAD's own (the seed's); the answer is `EMERGENCY CALL QUEUED ID: <ticket>`.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

url = os.environ.get("DISPATCHER_URL", "http://127.0.0.1:8000").rstrip("/")
call = {
    "serverId": os.environ.get("SONORAN_SERVER_ID", "1"),
    "isEmergency": True,
    "caller": "Jane Doe",
    "location": "Route 68 / Joshua Rd",
    "description": "Two-car collision",
    "metaData": {"postal": "350", "plate": "8ABC123"},
    # Made once per call, not per attempt: a retry after a lost answer gets the
    # first attempt's id back instead of creating a second call.
    "idempotencyKey": f"example-{uuid.uuid4()}",
}
body = json.dumps({
    "id": os.environ["SONORAN_COMMUNITY_ID"],
    "key": os.environ["SONORAN_API_KEY"],
    "type": "CALL_911",
    "data": [call],
}).encode()

for attempt in range(6):
    if attempt:
        time.sleep(min(2 ** attempt, 30))
    request = urllib.request.Request(f"{url}/emergency/call_911", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(response.read().decode().rsplit("ID: ", 1)[1])  # the call's ticket
            break
    except urllib.error.HTTPError as error:
        reason = error.read().decode()
        if error.code != 503:  # 400: wrong id, key or call; sending it again cannot help
            sys.exit(f"refused: {error.code} {reason}")
    except OSError as error:  # no answer: the dispatcher is restarting or unreachable
        reason = str(error)
else:
    sys.exit(f"dispatcher unavailable: {reason}")
