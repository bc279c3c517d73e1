"""`StudentTeacherConfig`: one student–teacher enhancement job, validated at the door.

Plain data (pydantic, no torch), like `EnhancedTrainingConfig`: the MCP server validates
`enhance_dataset` arguments with it, the job manager writes it to spec.json (with `"kind":
"enhance"`, which is how the worker tells the two kinds of job apart), the worker reads it back.

GRANGER's names are accepted (`teacher_model`, `judge_model`, `max_iterations`,
`student_temperature`, `teacher_temperature`, `batch_size`, `save_iterations`, `thinking_format`,
and `student_model` / `max_samples` / `output_dir` as aliases), so their configs load unchanged.

Secrets never live here: an endpoint names the environment variable that holds its key
(`api_key_env`), and the worker reads the variable; spec.json, logs and tool results only ever
show the name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finetune_mcp.config import DataConfig, MetadataFilters
from finetune_mcp.errors import ConfigError

DEFAULT_THINKING_FORMAT = "<think>\n{thinking}\n</think>\n\n{answer}"
# GRANGER's thinking_format values name a style, not a template.
THINKING_STYLES = {"iterative": "iterative", "final": "final"}
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_STUDENT_INSTRUCTIONS = "Think step by step, then give your final answer on the last line as 'Answer: ...'."
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
LOCAL_PREFIX = "hf:"  # teacher/judge "hf:<model id or folder>": a local Hugging Face model in the worker
REFERENCE_JUDGES = ("reference", "reference:exact", "reference:normalized", "reference:regex")


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class ChatEndpoint(BaseModel):
    """Where a teacher or judge runs: an OpenAI-compatible chat endpoint, or `hf:<model>` locally."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=500, description="Model name the endpoint serves, or 'hf:<model>'.")
    base_url: str | None = Field(None, description=f"OpenAI-compatible base URL (default {DEFAULT_BASE_URL}).")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="NAME of the environment variable holding the key (None: send no key).")
    temperature: float = Field(0.8, ge=0, le=2)
    max_tokens: int = Field(256, ge=1, le=32768)
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Per request.")

    @property
    def is_local(self) -> bool:
        return self.model.startswith(LOCAL_PREFIX)

    @property
    def local_model(self) -> str:
        return self.model.removeprefix(LOCAL_PREFIX)

    @property
    def url(self) -> str:
        return (self.base_url or DEFAULT_BASE_URL).rstrip("/")

    def describe(self) -> str:
        """How logs and results name the endpoint: model and URL, never the key."""
        return f"{self.model} (local)" if self.is_local else f"{self.model} at {self.url}"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL like 'http://127.0.0.1:8000/v1'")
        if parsed.username or parsed.password:
            raise ValueError("put credentials in the environment variable named by api_key_env, not in the URL")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _ENV_NAME.match(value):
            # Never echo the value: it may be a key pasted by mistake.
            raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key itself")
        return value


class ExampleWeightConfig(BaseModel):
    """How each enhanced example's training weight is made from its quality and its entropy.

    Default (`function="quality_entropy"`), with q the judge's score of the final answer in [0, 1]
    and h₀ = (mean token entropy of the student's first, unaided attempt) / log V in [0, 1]:

        weight = clip(q ** quality_power · (1 + entropy_scale · h₀), min_weight, max_weight)

    A right answer the student was unsure of at first weighs most (up to 1 + entropy_scale); an
    example whose final answer stayed wrong weighs q ** quality_power (0 with the reference checker),
    so it contributes nothing unless min_weight > 0. `function = "pkg.module:fn"` replaces the formula:
    fn(stats: dict) -> float, stats holding quality, entropy_first, entropy_final, log_vocab,
    iterations, hints, converged; the result is clipped the same way.
    """

    model_config = ConfigDict(extra="forbid")

    function: str = Field("quality_entropy", description="quality_entropy or a dotted path 'pkg.mod:fn'.")
    quality_power: float = Field(1.0, ge=0, le=10)
    entropy_scale: float = Field(1.0, ge=0, le=100)
    min_weight: float = Field(0.0, ge=0)
    max_weight: float = Field(10.0, gt=0, le=1000)

    @field_validator("function")
    @classmethod
    def _known(cls, value: str) -> str:
        if value == "quality_entropy":
            return value
        module, sep, attr = value.partition(":")
        if not sep or not all(p.isidentifier() for p in [*module.split("."), attr]):
            raise ValueError(f"{value!r} is neither quality_entropy nor a dotted path like 'my_pkg.weights:fn'")
        return value

    @model_validator(mode="after")
    def _order(self) -> ExampleWeightConfig:
        if self.min_weight > self.max_weight:
            raise ValueError(f"min_weight ({self.min_weight}) must not exceed max_weight ({self.max_weight})")
        return self


class StudentTeacherConfig(BaseModel):
    """One enhancement job. Required: `model` (the student = the model you will fine-tune),
    `dataset` (conversations whose last assistant turn is the reference answer) and `teacher`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: Literal["enhance"] = "enhance"

    # Student and data
    model: str = Field(validation_alias=_alias("model", "student_model", "model_name"), min_length=1)
    dataset: str = Field(validation_alias=_alias("dataset", "dataset_path"), min_length=1)
    dataset_format: Literal["auto", "alpaca", "messages", "sharegpt", "prompt_completion", "arangodb"] = "auto"
    dataset_split: str = "train"
    metadata_filters: MetadataFilters = Field(default_factory=MetadataFilters)
    max_examples: int | None = Field(None, ge=1, validation_alias=_alias("max_examples", "max_samples"))
    seed: int = 3407
    backend: Literal["auto", "unsloth", "hf"] = "auto"
    load_in_4bit: bool = False
    max_seq_length: int = Field(2048, ge=16, le=131072)
    student_temperature: float = Field(0.7, ge=0, le=2, description="0: greedy.")
    student_max_new_tokens: int = Field(256, ge=1, le=32768)
    student_instructions: str = Field(DEFAULT_STUDENT_INSTRUCTIONS, max_length=4000,
                                      description="Appended to the last user turn when the student answers.")
    batch_size: int = Field(4, ge=1, le=256, description="Examples generated together (and in flight together).")

    # Teacher and judge
    teacher: ChatEndpoint = Field(validation_alias=_alias("teacher", "teacher_model"))
    judge: ChatEndpoint | None = Field(
        None, validation_alias=_alias("judge", "judge_model"),
        description="None or 'reference[:exact|:normalized|:regex]': check against the dataset's answer.")
    answer_check: Literal["exact", "normalized", "regex"] = Field(
        "normalized", description="Reference checker: exact text, normalised (case/punctuation/space), or regex "
        "(metadata.answer_regex of the row, else the escaped reference).")
    pass_score: float = Field(0.5, ge=0, le=1, description="A judge score at or above this counts as right.")
    teacher_temperature: float | None = Field(None, ge=0, le=2, description="Shortcut for teacher.temperature (0.8).")

    # Rounds and hints
    max_iterations: int = Field(3, ge=1, le=20)
    hint_rule: Literal["wrong", "entropy", "wrong_or_entropy"] = Field(
        "wrong_or_entropy", description="When the teacher is asked for a hint after a round.")
    entropy_threshold: float = Field(2.5, ge=0, description="Nats; a token above it is uncertain.")
    min_span_tokens: int = Field(2, ge=1, description="An uncertain span this long (consecutive tokens) triggers a hint.")
    thinking_format: str = Field(DEFAULT_THINKING_FORMAT, max_length=2000,
                                 description="Assistant reply template with {thinking} and {answer}; GRANGER's "
                                 "'iterative' / 'final' pick the default template and that thinking_style.")
    thinking_style: Literal["iterative", "final"] = Field(
        "iterative", description="iterative: every attempt and hint in the thinking; final: the last attempt only.")
    save_iterations: bool = True

    # Weights, budget, robustness
    weight: ExampleWeightConfig = Field(default_factory=ExampleWeightConfig)
    max_concurrency: int = Field(8, ge=1, le=256, description="Remote calls in flight at once.")
    max_retries: int = Field(4, ge=0, le=20)
    retry_backoff_s: float = Field(1.0, ge=0, le=60, description="First retry delay; doubles each retry.")
    max_consecutive_failures: int = Field(3, ge=1, description="Stop the job after this many examples in a row "
                                          "whose teacher/judge calls failed after all retries.")
    budget_max_calls: int | None = Field(None, ge=1, description="Stop after this many teacher+judge requests.")
    budget_max_tokens: int | None = Field(None, ge=1, description="Stop after this many teacher+judge tokens.")
    resume_from: str | None = Field(None, description="progress.jsonl of an earlier enhancement to reuse.")
    run_dir: str | None = Field(None, validation_alias=_alias("run_dir", "output_dir"))

    @model_validator(mode="before")
    @classmethod
    def _shapes(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("teacher", "teacher_model", "judge", "judge_model"):
            if isinstance(data.get(key), str):
                data[key] = {"model": data[key]}
        judge = data.get("judge", data.get("judge_model"))
        if isinstance(judge, dict) and str(judge.get("model", "")).startswith("reference"):
            mode = judge["model"]
            if mode not in REFERENCE_JUDGES:
                raise ValueError(f"judge {mode!r}: use one of {', '.join(REFERENCE_JUDGES)} or a model name")
            if ":" in mode:
                data["answer_check"] = mode.split(":", 1)[1]
            data.pop("judge", None)
            data.pop("judge_model", None)
        style = THINKING_STYLES.get(str(data.get("thinking_format", "")))
        if style is not None:
            data["thinking_format"] = DEFAULT_THINKING_FORMAT
            data.setdefault("thinking_style", style)
        return data

    @model_validator(mode="after")
    def _derived(self) -> StudentTeacherConfig:
        if self.teacher_temperature is not None:
            self.teacher = self.teacher.model_copy(update={"temperature": self.teacher_temperature})
        if self.judge is not None:
            update: dict[str, Any] = {}
            if "temperature" not in self.judge.model_fields_set:
                update["temperature"] = 0.0  # a judge should be repeatable
            if self.judge.base_url is None and not self.judge.is_local:
                # A judge on the teacher's gateway is the common case: inherit its URL and key name.
                update.update(base_url=self.teacher.base_url, api_key_env=self.teacher.api_key_env)
            if update:
                self.judge = self.judge.model_copy(update=update)
        if "{answer}" not in self.thinking_format:
            raise ValueError("thinking_format must contain {answer} (and usually {thinking})")
        try:
            self.thinking_format.format(thinking="", answer="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"thinking_format is not a valid template ({exc}); use only {{thinking}} and "
                             "{answer}, double other braces") from None
        return self

    @property
    def judge_name(self) -> str:
        return f"reference:{self.answer_check}" if self.judge is None else self.judge.describe()

    @property
    def data(self) -> DataConfig:
        """The dataset as `load_examples` reads it: every row (no validation split), same filters."""
        return DataConfig(
            dataset=self.dataset, dataset_format=self.dataset_format, dataset_split=self.dataset_split,
            metadata_filters=self.metadata_filters, max_examples=self.max_examples, validation_split=0.0,
            seed=self.seed, max_seq_length=self.max_seq_length,
        )


def build_enhance_config(data: dict[str, Any]) -> StudentTeacherConfig:
    """Validate a mapping into a `StudentTeacherConfig`, as one `ConfigError` naming each problem.
    Values given for `api_key_env` are never quoted back: they may be a key pasted by mistake."""
    try:
        return StudentTeacherConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "config"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field; check the spelling (see StudentTeacherConfig fields)"
            quote = "input" in err and err["type"] != "missing" and "api_key_env" not in loc
            lines.append(f"{loc}: {msg}" + (f" (got {err['input']!r})" if quote else ""))
        raise ConfigError("invalid enhancement config: " + "; ".join(lines)) from None


def load_enhance_spec(spec: str | Path) -> StudentTeacherConfig:
    try:
        data = json.loads(Path(spec).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the enhancement spec {spec}: {exc}; pass the job's spec.json") from None
    return build_enhance_config(data)


def enhance_config_from(config_file: str | Path | None, **flags: Any) -> StudentTeacherConfig:
    """The CLI's config: a YAML/JSON file (optional) with the flags given on top; teacher_base_url
    and teacher_api_key_env go into the teacher endpoint."""
    data: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except (OSError, ValueError) as exc:  # yaml's errors are ValueErrors too
            raise ConfigError(f"cannot read {path} ({exc}); pass a YAML or JSON StudentTeacherConfig") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of field names to values")
    if "teacher_model" in data:  # GRANGER's name, so that a --teacher flag replaces it
        data.setdefault("teacher", data.pop("teacher_model"))
    endpoint = {k: v for k, v in (("base_url", flags.pop("teacher_base_url", None)),
                                  ("api_key_env", flags.pop("teacher_api_key_env", None))) if v is not None}
    data.update({k: v for k, v in flags.items() if v is not None})
    if endpoint:
        teacher = data.get("teacher")
        data["teacher"] = {**({"model": teacher} if isinstance(teacher, str) else dict(teacher or {})), **endpoint}
    return build_enhance_config(data)
