"""The MCP server: the FastMCP app and its lifespan (`app`), HTTP bearer-token auth (`auth`), the
prompts (`prompts`) and the job resources (`resources`). Tools live in `tools/`."""
