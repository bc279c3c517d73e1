"""The server fixtures (a real `finetune-mcp serve` over stdio on a temporary home, the tiny model,
a small dataset) for the experiment's stdio tests."""

from server.conftest import dataset, server_home, tiny_model  # noqa: F401
