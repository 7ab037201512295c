"""Drives `guard mcp` with the real Python MCP SDK's stdio client (installed by
`scripts/deps test` into target/tools/mcp). Usage:

    client.py GUARD_BIN < SCENARIO_JSON        one session, the calls of the scenario
    client.py GUARD_BIN --bench N < CALL_JSON  one session, the call N times; prints latencies

The scenario (on stdin) is a list of calls {"tool": name, "args": {...}}; each answer is
printed as one JSON line: {"ok": text} for a result, {"tool_error": text} for a result flagged
isError, or {"error": message} for an MCP error. The first line lists the tools and their input
schemas. In a call's arguments the string "$REQUEST" stands for the last "request" id an answer
named.

The client introduces itself as "guard-test-agent" 1.0 (what guard's audit records name)."""

import asyncio
import json
import os
import statistics
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import Implementation


def substitute(value, request):
    if isinstance(value, str):
        return value.replace("$REQUEST", request or "")
    if isinstance(value, list):
        return [substitute(v, request) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, request) for k, v in value.items()}
    return value


async def call(session, tool, args):
    """One tool call: (key, text) with key ok, tool_error or error."""
    try:
        r = await session.call_tool(tool, args)
    except Exception as e:  # an MCP error answer
        return "error", str(e)
    text = "".join(c.text for c in r.content if getattr(c, "text", None))
    err = getattr(r, "is_error", None)
    if err is None:
        err = getattr(r, "isError", False)
    return ("tool_error" if err else "ok"), text


async def main() -> None:
    guard = sys.argv[1]
    bench = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--bench" else None
    scenario = json.load(sys.stdin)
    # The SDK passes a reduced environment by default; the test's (vault dir, cache) is wanted.
    params = StdioServerParameters(command=guard, args=["mcp"], env=dict(os.environ))
    me = Implementation(name="guard-test-agent", version="1.0")
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, client_info=me) as session:
            init = await session.initialize()
            if bench is not None:
                await run_bench(session, scenario, bench)
                return
            tools = await session.list_tools()
            info = getattr(init, "server_info", None) or getattr(init, "serverInfo")
            print(json.dumps({
                "server": info.name,
                "tools": {
                    t.name: getattr(t, "input_schema", None) or getattr(t, "inputSchema")
                    for t in tools.tools
                },
            }), flush=True)
            request = None
            for step in scenario:
                key, text = await call(session, step["tool"], substitute(step["args"], request))
                try:
                    named = json.loads(text).get("request")
                    if isinstance(named, str):
                        request = named
                except (ValueError, AttributeError):
                    pass
                print(json.dumps({key: text}), flush=True)


async def run_bench(session, c, n) -> None:
    """The call n times after 10 warm-up calls; every answer must be a result."""
    times = []
    for i in range(n + 10):
        t = time.perf_counter()
        key, text = await call(session, c["tool"], c["args"])
        dt = time.perf_counter() - t
        if key != "ok":
            sys.exit(f"call {i} failed: {key}: {text}")
        if i >= 10:
            times.append(dt * 1e3)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
    print(json.dumps({"calls": n, "p50_ms": round(statistics.median(times), 2),
                      "p90_ms": round(q(0.9), 2), "p99_ms": round(q(0.99), 2),
                      "min_ms": round(times[0], 2), "max_ms": round(times[-1], 2)}))


asyncio.run(main())
