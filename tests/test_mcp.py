"""The API as Model Context Protocol tools (`studio launch --mcp`): every public endpoint is a tool with
its parameters and their meanings; an MCP client calls generate_image and gan_sample and gets pictures."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from studio.api.docs import EXAMPLES
from tests.live import start

pytest.importorskip("mcp", reason="the [mcp] extra is part of the test extras")


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    from tests.conftest import _free_port

    root = tmp_path_factory.mktemp("mcp")
    port = _free_port()
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir,
                          launch_options={"mcp_server": True})
    yield f"http://127.0.0.1:{port}", services
    app.close()


def test_the_schema_lists_every_public_endpoint_with_described_parameters(mcp_server):
    url, _ = mcp_server
    with urllib.request.urlopen(f"{url}/gradio_api/mcp/schema", timeout=30) as response:
        schema = json.loads(response.read())
    tools = {tool["name"]: tool for tool in schema}
    assert set(EXAMPLES) <= set(tools), set(EXAMPLES) - set(tools)
    image = tools["generate_image"]
    properties = image["inputSchema"]["properties"]
    assert {"prompt", "negative_prompt", "steps", "cfg_scale", "sampler_name", "seed"} <= set(properties)
    assert "classifier-free guidance" in properties["cfg_scale"].get("description", "")
    assert "Text to image" in image["description"]


def test_an_mcp_client_makes_pictures(mcp_server):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    url, services = mcp_server

    async def run():
        async with streamablehttp_client(f"{url}/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = {t.name for t in (await session.list_tools()).tools}
                assert {"generate_image", "gan_sample"} <= listed
                image = await session.call_tool("generate_image", {"prompt": "a red fox", "model": "tiny-sd",
                                                                   "steps": 2, "width": 64, "height": 64, "seed": 3})
                gan = await session.call_tool("gan_sample", {"model": "tiny-gan", "seed": 5, "grid_size": 2})
                bad = await session.call_tool("gan_sample", {"model": "tiny-gan", "grid_size": 99})
                return image, gan, bad

    image, gan, bad = asyncio.run(run())
    for result in (image, gan):
        assert not result.isError, result.content
        text = " ".join(getattr(c, "text", "") for c in result.content)
        kinds = {getattr(c, "type", "") for c in result.content}
        assert "image" in kinds or ".png" in text, result.content
    assert bad.isError and "grid_size must be a whole number from 1 to 8" in " ".join(
        getattr(c, "text", "") for c in bad.content)
    assert [i.seed for i in services.history.list(tab="image")] == [3]
