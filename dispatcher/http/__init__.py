"""The web side: the HTTP doors a call comes in through, and the operations page.

`server` runs the app (waitress, or gunicorn above one process); `ingest` builds it: the
v1/v2 doors that read a request (`body`), check it (`doorrules`, `throttle`,
`clientaddr`, `refusals`) and queue its calls through the core `Producer`; `opspage`
(behind `auth`) shows what the core holds; `openapi` describes the doors.
"""
