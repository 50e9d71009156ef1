"""The web side: the HTTP doors a call comes in through, and the operations page.

`server` runs the app (waitress, or several processes on one socket) that `app` builds:
the v1/v2 doors of `ingest`, which read a request (`body`), check it (`doorrules`,
`throttle`, `clientaddr`, `refusals`) and queue its calls through the core `Producer`;
`handlers` answers what goes wrong; `opspage` (with `login`, `auth`, `probes` and the
shared `opsstate`) shows operators what the core holds; `openapi` describes the doors.
"""
