"""The MCP server: the FastMCP app and its lifespan (`app`), HTTP access (`auth`: the bearer token, Host/Origin checks), the
prompts (`prompts`) and the job resources (`resources`). Tools live in `tools/`."""
