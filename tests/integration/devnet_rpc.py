"""A blocking JSON-RPC call for test set-up against a devnet (the agent itself is async)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence


def rpc_call_sync(url: str, method: str, params: Sequence[object] = ()) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        payload = json.loads(resp.read())
    assert "error" not in payload, f"{method}: {payload['error']}"
    return payload["result"]
