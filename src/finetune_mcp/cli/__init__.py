"""The `finetune-mcp` command line: the same operations as the MCP tools, for people and scripts.

One module per command group, each adding its commands to the one Typer `app` (`cli.app`):

    train       train (flags generated from the config groups: `options`)
    enhance     enhance
    preview     preview (and `--serve`, the MCP tool's warm child: `preview.child`)
    experiment  experiment, experiment-table, and the progress bar / tables the demo shares
    worker      worker run | serve (what the job manager and RunPod pods start)
    serve       serve (the MCP server)
    jobs        jobs, status, cancel, logs
    demo        demo
    sample      sample
    report      card, screenshot, deploy
    export      export

Heavy imports (torch, transformers, TRL) happen inside the commands that train, so `--help`, `serve`
and the job commands start fast. A `FinetuneError` becomes a red message and exit code 2. The
console script is `finetune-mcp = "finetune_mcp.cli:app"`; `python -m finetune_mcp.cli` is the same.
"""

# Importing a group adds its commands; `--help` lists them in this order.
# isort: off
from finetune_mcp.cli import train  # noqa: F401
from finetune_mcp.cli import enhance  # noqa: F401
from finetune_mcp.cli import preview  # noqa: F401
from finetune_mcp.cli import experiment  # noqa: F401
from finetune_mcp.cli import worker  # noqa: F401
from finetune_mcp.cli import serve  # noqa: F401
from finetune_mcp.cli import jobs  # noqa: F401
from finetune_mcp.cli import demo  # noqa: F401
from finetune_mcp.cli import sample  # noqa: F401
from finetune_mcp.cli import report  # noqa: F401
from finetune_mcp.cli import export  # noqa: F401
# isort: on
from finetune_mcp.cli.app import app

__all__ = ["app"]
