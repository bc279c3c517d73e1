"""evaluate_model(job_id, split="validation") over stdio scores exactly the rows the job's training held
out, also when the job split its data with its own `split_seed` (as every experiment arm does): the
evaluation's spec carries every data field of the job, so the seeded split is the same."""

from __future__ import annotations

import json
import time
from pathlib import Path

from finetune_mcp.config import build_config
from finetune_mcp.data.loader import load_examples
from finetune_mcp.evaluation.job import EvaluationSpec
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.store import Job, JobState

TRAINED = "ft-00000005ee0d"


async def test_validation_split_of_a_job_is_the_rows_its_training_held_out(server_home, tiny_model: Path,
                                                                            dataset: Path, tmp_path: Path) -> None:
    server = server_home()
    # A finished training job whose split seed differs from its training seed (an experiment arm's shape).
    trained = build_config({"model": str(tiny_model), "dataset": str(dataset), "seed": 3407, "split_seed": 11,
                            "validation_split": 0.25, "max_seq_length": 256})
    run_dir = tmp_path / "trained"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model)}))
    store = server.store()
    now = time.time()
    store.insert(Job(id=TRAINED, state=JobState.QUEUED, target="local", backend="local", device="cpu", slot="cpu",
                     placement=Placement("local", "cpu", None, "registered by the test").to_json(),
                     config=trained.model_dump(mode="json"), run_dir=str(run_dir), created_at=now, updated_at=now))
    store.transition(TRAINED, JobState.RUNNING)
    store.transition(TRAINED, JobState.SUCCEEDED, reason="registered by the test")
    store.close()

    async with server.client() as client:
        started = (await client.call_tool("evaluate_model", {"job_id": TRAINED, "split": "validation",
                                                             "metrics": ["loss"]})).structured_content
        await client.call_tool("cancel_job", {"job_id": started["job_id"]})  # its rows are what this test reads

    assert started["split"] == "validation"
    spec = EvaluationSpec.model_validate(json.loads((Path(started["run_dir"]) / "spec.json").read_text()))
    held_out = load_examples(trained.data).validation
    scored = load_examples(spec.data).validation
    assert spec.split_seed == 11 and len(held_out) == 8
    assert scored == held_out
