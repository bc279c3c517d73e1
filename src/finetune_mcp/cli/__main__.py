"""`python -m finetune_mcp.cli`: what the job manager, the preview child and the tests start."""

from finetune_mcp.cli import app

app()
