"""One notification delivery through apprise, run as a short-lived child of the daemon
(``python -m agent.sinks.notify_child``).

Why a process and not a thread: apprise's HTTP calls time out per read, not per response, so an
endpoint that trickles one byte a second holds a call for ever, and a thread cannot be
cancelled (the daemon could not exit while it waited). A child can be killed: the parent kills
it at the notifier's total deadline or at shutdown, and it arms its own alarm at that deadline
so it dies even if the parent was killed with -9.

Input on stdin (never the command line: the URLs hold tokens): one JSON object
``{"urls": [...], "title": ..., "body": ..., "level": ..., "deadline_s": ...}``.
Exit status: 0 delivered to every URL, 1 an endpoint refused or failed, 2 a URL apprise rejects.
"""

from __future__ import annotations

import json
import math
import signal
import sys

DELIVERED, FAILED, BAD_URL = 0, 1, 2


def main() -> int:
    req = json.loads(sys.stdin.read())
    signal.alarm(max(1, math.ceil(float(req["deadline_s"]))))
    import apprise

    ap = apprise.Apprise()
    for url in req["urls"]:
        if not ap.add(url):
            return BAD_URL
    types = {
        "info": apprise.NotifyType.INFO,
        "success": apprise.NotifyType.SUCCESS,
        "warning": apprise.NotifyType.WARNING,
        "failure": apprise.NotifyType.FAILURE,
    }
    ok = ap.notify(body=req["body"], title=req["title"], notify_type=types[req["level"]])
    return DELIVERED if ok else FAILED


if __name__ == "__main__":
    sys.exit(main())
