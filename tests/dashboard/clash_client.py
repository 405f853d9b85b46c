"""Lists proxies and switches GLOBAL through a Clash controller with the PyPI client
`clash-controller-api` (not written here), for tests/dashboard.rs.

Usage: clash_client.py BASE_URL SECRET TARGET_NAME
Prints one JSON line: {"version": ..., "global_now_before": ..., "members": [...],
"global_now_after": ..., "errors": {...}}. Exit 1 with a message on any client error.
"""

import asyncio
import json
import sys

import aiohttp
from clash_controller_api import ClashAPI, ClashAPIError

# Every call below is bounded: the client's own timeouts are 15 s per request, this caps all.
TOTAL_LIMIT_SECS = 60


async def run(base: str, secret: str, target: str) -> dict:
    async with aiohttp.ClientSession() as session:
        api = ClashAPI(base, secret, session=session)
        await api.async_validate_connection()
        version = await api.async_get_version()
        result = await api.async_fetch_data()
        proxies = result.data.get("proxies", {}).get("proxies", {})
        glob = proxies.get("GLOBAL")
        if glob is None:
            raise SystemExit(f"no GLOBAL group in /proxies (keys: {sorted(proxies)})")
        before = glob.get("now")
        await api.async_request("PUT", "proxies/GLOBAL", json_data={"name": target})
        after = (await api.async_request("GET", "proxies/GLOBAL")).get("now")
        return {
            "version": version.version,
            "model": version.model,
            "global_now_before": before,
            "members": glob.get("all", []),
            "global_now_after": after,
            "capabilities": api.capabilities,
            "errors": {k: str(v) for k, v in result.errors.items()},
        }


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit("usage: clash_client.py BASE_URL SECRET TARGET_NAME")
    base, secret, target = sys.argv[1:]
    try:
        out = asyncio.run(asyncio.wait_for(run(base, secret, target), TOTAL_LIMIT_SECS))
    except ClashAPIError as err:
        raise SystemExit(f"clash-controller-api: {type(err).__name__}: {err}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
