"""Drives `guard mcp` with the real Python MCP SDK's stdio client (installed by
`scripts/deps test` into target/tools/mcp). Usage: client.py GUARD_BIN < SCENARIO_JSON

The scenario (on stdin) is a list of calls {"tool": name, "args": {...}}; each answer is printed as one
JSON line: {"ok": text} for a result, {"tool_error": text} for a result flagged isError, or
{"error": message} for an MCP error. The first line lists the tools and their input schemas."""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main() -> None:
    guard, scenario = sys.argv[1], json.load(sys.stdin)
    # The SDK passes a reduced environment by default; the test's (vault dir, cache) is wanted.
    params = StdioServerParameters(command=guard, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            info = getattr(init, "server_info", None) or getattr(init, "serverInfo")
            print(json.dumps({
                "server": info.name,
                "tools": {
                    t.name: getattr(t, "input_schema", None) or getattr(t, "inputSchema")
                    for t in tools.tools
                },
            }), flush=True)
            for call in scenario:
                try:
                    r = await session.call_tool(call["tool"], call["args"])
                    text = "".join(c.text for c in r.content if getattr(c, "text", None))
                    err = getattr(r, "is_error", None)
                    if err is None:
                        err = getattr(r, "isError", False)
                    key = "tool_error" if err else "ok"
                    print(json.dumps({key: text}), flush=True)
                except Exception as e:  # an MCP error answer
                    print(json.dumps({"error": str(e)}), flush=True)


asyncio.run(main())
