"""The job-kind registry: the one place that knows which kinds of job exist and what each needs.

A job kind (train, enhance, evaluate, ...) is a spec model, the paths a spec names (`paths`: what
`start_job` confines to the client's allowed roots, `config.roots`), a start check (`preflight`, in the
server: fails in a second with the fix, before any worker exists), a placement (`place`: where
its worker runs), a worker body (`run`, in the worker process), the word messages use for it
(`label`), what a succeeded job of it leaves behind (`produces`), the hints an agent reads
while it runs and when it is done, and, for kinds whose result is the point (sample), the
compact result get_job and wait_for_job show once it succeeded (`result_view`). Every consumer asks
here: the CLI's `worker run`, the tools that start jobs (`start_job`; `plan_job` then `start_planned` when the user
must agree to where a job runs and what it costs), `get_job`'s hints (`hint`), and the "a succeeded job of kind X"
check of the tools that build on a job (`succeeded_job`). The job manager never sees a kind: it
receives the preflight and placement callables with the spec (see `jobs.manager.JobManager.start`).

Adding a kind: write its capability module (spec model, checks, worker body), add one `JobKind`
entry to `KINDS`, and a tool that calls `start_job`. Everything imported here is light (no torch):
heavy imports live inside the worker bodies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_mcp.config import AllowedRoots, EnhancedTrainingConfig, LocalPath, Settings
from finetune_mcp.config.tracking import worker_variables
from finetune_mcp.enhance.config import LOCAL_PREFIX, load_enhance_spec
from finetune_mcp.enhance.start import check_enhance_start, place_enhance_job
from finetune_mcp.enhance.workflow import run_enhancement
from finetune_mcp.errors import JobError
from finetune_mcp.evaluation.job import check_evaluation_start, load_evaluation_spec, place_evaluation, run_evaluation
from finetune_mcp.experiment.gather import run_experiment_job
from finetune_mcp.experiment.parallel import queue_parallel
from finetune_mcp.experiment.spec import load_experiment_spec
from finetune_mcp.experiment.start import check_experiment_start, place_experiment
from finetune_mcp.export.spec import check_export_start, load_export_spec, place_export_job
from finetune_mcp.export.workflow import result_view as export_view
from finetune_mcp.export.workflow import run_export
from finetune_mcp.jobs.placement import SHARES, Placement
from finetune_mcp.jobs.router import place_job
from finetune_mcp.jobs.store import Job, JobState
from finetune_mcp.runs.session import bind_rank_to_launcher, run_worker, spec_kind
from finetune_mcp.sample.results import compact_view
from finetune_mcp.sample.spec import load_sample_spec
from finetune_mcp.sample.start import check_sample_start, place_sample_job
from finetune_mcp.sample.workflow import run_sampling
from finetune_mcp.train.preflight import check_start, resolve_checkpoint_ref
from finetune_mcp.train.workflow import run_training

if TYPE_CHECKING:
    from pydantic import BaseModel

    from finetune_mcp.jobs.manager import JobManager

DEFAULT_KIND = "train"  # training specs predate kinds and carry no "kind" field


@dataclass(frozen=True)
class JobKind:
    """Everything the house needs to know about one kind of job."""

    name: str
    label: str  # "training": messages say "training failed at step 3/10: ..."
    produces: str  # what a succeeded job leaves in its run directory, for messages
    load_spec: Callable[[Path], BaseModel]  # worker side: spec.json → the spec model
    preflight: Callable[[Any, Settings], Any]  # server side: the spec, checked and made absolute
    place: Callable[[Any, str, Settings], Placement]
    run: Callable[[Any, Path], object]  # the worker body: (spec, run_dir)
    paths: Callable[[Any], list[LocalPath]]  # every path the spec names (read or written)
    running_hint: Callable[[Job, str], str] | None = None  # (job, "follow it with ...") → hint
    done_hint: Callable[[Job], str] | None = None
    before_worker: Callable[[], None] | None = None  # process set-up in the worker (DDP ranks)
    result_view: Callable[[Job], dict[str, Any] | None] | None = None  # get_job's `result` once succeeded
    # other jobs the spec names (a checkpoint '<job_id>:<step>') made paths, before the roots check:
    # (spec, run_dir_of) → spec, where run_dir_of(job_id) is the job store's run directory of that job
    resolve: Callable[[Any, Callable[[str], Path]], Any] | None = None
    # Queues a placement that spreads over several jobs (a parallel experiment's shares) itself:
    # (manager, checked spec, target, placement) → the job that stands for them all. None: one job.
    queue: Callable[[JobManager, Any, str, Placement], Awaitable[Job]] | None = None


def _tracked(place: Callable[[Any, str, Settings], Placement]) -> Callable[[Any, str, Settings], Placement]:
    """A training placement that also names the variables of the trackers the spec asks for (the W&B key,
    MLflow's server and credentials): its worker receives them, and only a worker of such a job."""
    def placed(spec: Any, target: str, settings: Settings) -> Placement:
        placement = place(spec, target, settings)
        names = worker_variables(spec)
        if not names:
            return placement

        def named(one: Placement) -> Placement:
            return replace(one, env=tuple(dict.fromkeys((*one.env, *names))))

        if SHARES in placement.details:  # a parallel experiment: each share's worker trains runs too
            shares = [{**share, "placement": named(Placement.from_json(share["placement"])).to_json()}
                      for share in placement.details[SHARES]]
            placement = replace(placement, details={**placement.details, SHARES: shares})
        return named(placement)
    return placed


def _training_paths(spec: Any) -> list[LocalPath]:
    """A training config's paths (an experiment's too: it is one, plus held-out and retain rows)."""
    checkpoint = spec.resume_from_checkpoint if isinstance(spec.resume_from_checkpoint, str) else None
    return [LocalPath("model", spec.model, hub_id_ok=True), LocalPath("dataset", spec.dataset, hub_id_ok=True),
            LocalPath("eval_dataset", getattr(spec, "eval_dataset", None), hub_id_ok=True),
            LocalPath("retain_dataset", getattr(spec, "retain_dataset", None), hub_id_ok=True),
            LocalPath("resume_from_checkpoint", checkpoint), LocalPath("run_dir", spec.run_dir)]


def _enhance_paths(spec: Any) -> list[LocalPath]:
    local = [LocalPath(f"{role}.model", endpoint.model.removeprefix(LOCAL_PREFIX), hub_id_ok=True)
             for role, endpoint in (("teacher", spec.teacher), ("judge", spec.judge))
             if endpoint is not None and endpoint.model.startswith(LOCAL_PREFIX)]
    return [LocalPath("model", spec.model, hub_id_ok=True), LocalPath("dataset", spec.dataset, hub_id_ok=True),
            *local, LocalPath("resume_from", spec.resume_from), LocalPath("run_dir", spec.run_dir)]


def _evaluate_paths(spec: Any) -> list[LocalPath]:
    return [LocalPath("model", spec.model, hub_id_ok=True), LocalPath("adapter", spec.adapter),
            LocalPath("dataset", spec.dataset, hub_id_ok=True), LocalPath("source_run_dir", spec.source_run_dir),
            LocalPath("run_dir", spec.run_dir)]


def _sample_paths(spec: Any) -> list[LocalPath]:
    models = [path for i, m in enumerate(spec.models) for path in (
        LocalPath(f"models[{i}].model", m.model, hub_id_ok=True), LocalPath(f"models[{i}].adapter", m.adapter))]
    rows = spec.rows.dataset if spec.rows is not None else None
    return [*models, LocalPath("dataset", spec.dataset or None, hub_id_ok=True),
            LocalPath("rows.dataset", rows, hub_id_ok=True), LocalPath("run_dir", spec.run_dir)]


def _export_paths(spec: Any) -> list[LocalPath]:
    return [LocalPath("source_run_dir", spec.source_run_dir), LocalPath("run_dir", spec.run_dir)]


def _train_running(job: Job, follow: str) -> str:
    from finetune_mcp.config.preference import zero_loss_note

    note = zero_loss_note(job.config)
    return f"training; {follow}, or cancel_job to stop it" + (f"; {note}" if note else "")


def _train_done(job: Job) -> str:
    return ("done: read get_entropy_metrics, tensorboard_screenshot or "
            "generate_model_card; deploy_to_hf only if the user asks to publish")


def _enhance_running(job: Job, follow: str) -> str:
    return f"enhancing the dataset; {follow}, or cancel_job to stop it (finished examples are kept)"


def _enhance_done(job: Job) -> str:
    output = f"{job.run_dir}/enhance/enhanced.jsonl"
    return (f"done: train on it with start_finetune(model='{job.config.get('model')}', dataset='{output}'); "
            f"numbers in {job.run_dir}/enhance/summary.json")


def _evaluate_running(job: Job, follow: str) -> str:
    return f"scoring (step = batches done); {follow}, or cancel_job to stop it"


def _evaluate_done(job: Job) -> str:
    return f"done: the results are in `metrics` ({job.run_dir}/result.json has the details)"


def _sample_running(job: Job, follow: str) -> str:
    return f"generating (step = answers done, over all models); {follow}, or cancel_job to stop it"


def _sample_done(job: Job) -> str:
    return (f"done: the answers side by side are in `result`; get_samples('{job.id}') adds every token's entropy; "
            "generate_model_card on the trained job shows a base-vs-tuned table")


def _experiment_running(job: Job, follow: str) -> str:
    return (f"training the experiment's runs one after another (step = steps over all runs); "
            f"get_experiment('{job.id}') shows the table of the finished runs so far; {follow}, or cancel_job "
            "to stop it (finished runs are kept)")


def _experiment_done(job: Job) -> str:
    return (f"done: get_experiment('{job.id}') for the table, the verdict and which arm to use; "
            f"tensorboard_screenshot('{job.id}') draws every run on one chart; report in "
            f"{job.run_dir}/experiment/report.md")


async def _queue_experiment(manager: JobManager, spec: Any, target: str, placement: Placement) -> Job:
    if SHARES in placement.details:  # in parallel: one job per share and the one that gathers them
        return await queue_parallel(manager, spec, target, placement)
    return await manager.start(spec, target, preflight=lambda s, settings: s,
                               placer=lambda s, target, settings: placement)


def _export_running(job: Job, follow: str) -> str:
    return (f"exporting to GGUF {job.config.get('quantization')} (steps: merge, convert, modelfile, verify, "
            f"publish); {follow}, or cancel_job to stop it (nothing half-written is kept)")


def _export_done(job: Job) -> str:
    return (f"done: {job.run_dir}/result.json has the GGUF path, the verification figures and the ollama / "
            f"llama-cli / LM Studio commands; deploy_to_hf(job_id='{job.config.get('source_job')}', "
            "include_gguf=True) publishes it with the adapter, only if the user asks")


KINDS: dict[str, JobKind] = {kind.name: kind for kind in (
    JobKind("train", "training", "a LoRA adapter (adapter/), metrics, TensorBoard logs",
            EnhancedTrainingConfig.from_file, check_start, _tracked(place_job), run_training, _training_paths,
            running_hint=_train_running, done_hint=_train_done, before_worker=bind_rank_to_launcher,
            resolve=resolve_checkpoint_ref),
    JobKind("enhance", "enhancement", "an enhanced dataset (enhance/enhanced.jsonl)",
            load_enhance_spec, check_enhance_start, place_enhance_job, run_enhancement, _enhance_paths,
            running_hint=_enhance_running, done_hint=_enhance_done),
    JobKind("evaluate", "evaluation", "metrics (result.json)",
            load_evaluation_spec, check_evaluation_start, place_evaluation, run_evaluation, _evaluate_paths,
            running_hint=_evaluate_running, done_hint=_evaluate_done),
    JobKind("sample", "sampling", "generations side by side with entropy marks (result.json)",
            load_sample_spec, check_sample_start, place_sample_job, run_sampling, _sample_paths,
            running_hint=_sample_running, done_hint=_sample_done, result_view=compact_view),


    JobKind("experiment", "experiment", "a table of held-out metrics over arms × seeds (experiment/table.json, "
            "report.md, plot.png) and one training run directory per arm and seed (runs/)",
            load_experiment_spec, check_experiment_start, _tracked(place_experiment), run_experiment_job,
            _training_paths, running_hint=_experiment_running, done_hint=_experiment_done, queue=_queue_experiment),
    JobKind("export", "export", "a verified GGUF + Ollama Modelfile in the source run's export/ (result.json)",
            load_export_spec, check_export_start, place_export_job, run_export, _export_paths,
            running_hint=_export_running, done_hint=_export_done, result_view=export_view),
)}


def get_kind(name: str | None) -> JobKind:
    """The kind called `name` (None: a training spec); a JobError naming the known kinds otherwise."""
    kind = KINDS.get(name or DEFAULT_KIND)
    if kind is None:
        raise JobError(f"unknown job kind {name!r}; known kinds: {', '.join(KINDS)}")
    return kind


def kind_of(job: Job) -> JobKind:
    """The kind of a stored job (its spec's `kind`; training specs have none)."""
    return get_kind(job.config.get("kind"))


async def plan_job(manager: JobManager, kind: str, spec: Any, target: str = "auto", *,
                   roots: AllowedRoots | None) -> tuple[Any, Placement]:
    """Check and place a job of `kind` without queuing it: (the checked spec, its placement). A tool
    shows the user what a job would cost before it starts (`tools.spending`), then queues exactly
    that with `start_planned`. `roots`: as for `start_job`."""
    import anyio

    entry = get_kind(kind)
    spec = _resolve(manager, entry, spec)
    if roots is not None:
        roots.check(entry.paths(spec))
    checked = await anyio.to_thread.run_sync(entry.preflight, spec, manager.settings)
    return checked, await anyio.to_thread.run_sync(entry.place, checked, target, manager.settings)


async def start_job(manager: JobManager, kind: str, spec: Any, target: str = "auto", *,
                    roots: AllowedRoots | None) -> Job:
    """Check, place and queue a job of `kind` (the tools' one way to start a job they did not plan).
    Every path the spec names must lie inside `roots` (the calling MCP client's) before anything is
    read or created; None only for the CLI, the user's own command."""
    entry = get_kind(kind)
    spec = _resolve(manager, entry, spec)
    if roots is not None:
        roots.check(entry.paths(spec))
    if entry.queue is not None:  # it may spread over several jobs: plan once, then queue them all
        checked, placement = await plan_job(manager, kind, spec, target, roots=None)
        return await entry.queue(manager, checked, target, placement)
    return await manager.start(spec, target, preflight=entry.preflight, placer=entry.place)


async def start_planned(manager: JobManager, checked: Any, target: str, placement: Placement) -> Job:
    """Queue the spec `plan_job` checked (roots included), where it was planned, with what the user
    agreed to in `placement.details`: nothing is checked or placed a second time."""
    entry = get_kind(getattr(checked, "kind", None))
    if entry.queue is not None:
        return await entry.queue(manager, checked, target, placement)
    return await manager.start(checked, target, preflight=lambda spec, settings: spec,
                               placer=lambda spec, target, settings: placement)


def _resolve(manager: JobManager, entry: JobKind, spec: Any) -> Any:
    """The spec with the other jobs it names turned into their paths (a kind without such names: as it is)."""
    if entry.resolve is None:
        return spec
    return entry.resolve(spec, lambda job_id: Path(manager.get(job_id).run_dir))


def worker_main(spec_path: Path) -> int:
    """`finetune-mcp worker run SPEC`: run the body of the kind SPEC names; 0 on success, 1 on failure."""
    kind = get_kind(spec_kind(spec_path))
    if kind.before_worker is not None:
        kind.before_worker()
    return run_worker(spec_path, lambda path: _with_imported_models(kind.load_spec(path)), kind.run, kind.label)


def _with_imported_models(spec: Any) -> Any:
    """The spec with any GGUF model replaced by its imported Hugging Face folder (converted here, in the
    worker, the first time: the server only read the file's header)."""
    from finetune_mcp.model.imports import import_spec_models

    return import_spec_models(spec, Settings.from_env().home)


def succeeded_job(manager: JobManager, job_id: str, purpose: str, kind: str = DEFAULT_KIND) -> Job:
    """The job `job_id` if it is a succeeded job of `kind`; else a JobError that names what is wrong
    and what to pass instead (`purpose`: "a model card", "evaluating its adapter", ...)."""
    job = manager.get(job_id)
    actual = kind_of(job)
    if actual.name != kind:
        wanted = get_kind(kind)
        raise JobError(f"job {job_id} is {_a(actual.name)} job ({actual.produces}); {purpose} needs a "
                       f"{wanted.label} job, which leaves {wanted.produces}; pick one from list_jobs",
                       job_id=job_id)
    if job.state is not JobState.SUCCEEDED:
        raise JobError(f"job {job_id} is {job.state.value}; {purpose} needs a succeeded job; "
                       "wait_for_job until it succeeds (or pick one from list_jobs(state='succeeded'))",
                       job_id=job_id)
    return job


def result_of(job: Job) -> dict[str, Any] | None:
    """The compact result get_job shows for a succeeded job whose kind has one (sample jobs); else None."""
    kind = kind_of(job)
    if job.state is not JobState.SUCCEEDED or kind.result_view is None:
        return None
    return kind.result_view(job)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def hint(job: Job, position: int | None) -> str:
    """What the agent should do next with `job`, by its state and kind."""
    kind = kind_of(job)
    follow = f"follow it with wait_for_job('{job.id}', timeout_s=120) or get_job"
    match job.state:
        case JobState.QUEUED:
            return f"waiting for slot {job.slot} (position {position}); {follow}"
        case JobState.PROVISIONING:
            return f"getting a machine on {job.backend}; {follow}"
        case JobState.RUNNING:
            if kind.running_hint is not None:
                return kind.running_hint(job, follow)
            return f"{kind.label}; {follow}, or cancel_job to stop it"
        case JobState.SUCCEEDED:
            return kind.done_hint(job) if kind.done_hint else f"done: {kind.produces} in {job.run_dir}"
        case JobState.FAILED:
            return "failed: read `error`, fix the cause, start a new job"
        case _:
            return f"cancelled; the partial run is kept in {job.run_dir}"
