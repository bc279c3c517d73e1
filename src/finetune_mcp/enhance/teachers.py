"""Teacher and judge clients: any OpenAI-compatible chat endpoint over HTTP, or a local HF model.

The HTTP client is plain httpx against `POST {base_url}/chat/completions` (OpenAI, a Claude/GPT
gateway, vLLM, llama.cpp's server, ...). Every request goes through one `Budget` (a cap on calls and
tokens across teacher and judge, retries included) and one `anyio.CapacityLimiter` (how many
requests are in flight). Timeouts, connection errors, 408/409/425/429 and 5xx are retried with
exponential backoff (Retry-After is honoured, up to 60 s); other 4xx fail at once, since
repeating a bad request or a wrong key cannot help.

Keys: the client reads the variable named by `api_key_env` when it is built and keeps the value
in memory only, after checking that the operator bound that variable to this endpoint
(`enhance.keys`: the server checked at start, the worker checks again here). Errors name the
endpoint (model and URL) and the variable, never the value; an error body that echoes the key is
redacted. Redirects are not followed, so a key never travels on to another host.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx

from finetune_mcp.enhance.config import ChatEndpoint
from finetune_mcp.enhance.keys import check_key_binding
from finetune_mcp.errors import ConfigError, FinetuneError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0

Messages = list[dict[str, str]]


class TeacherError(FinetuneError):
    """A teacher or judge endpoint could not answer (after retries, or a request it refused).
    `fatal`: no later request can succeed either (a wrong key, URL or model name): stop the job."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        self.fatal = fatal
        super().__init__(message)


class BudgetExhausted(Exception):  # control flow, not an error the user has to fix
    """The call or token budget is spent: the job finishes what it has and stops asking."""


class Budget:
    """Calls and tokens spent on teacher + judge requests, against optional caps. Starts from what
    earlier runs of the same job spent (resume), so a cap holds across restarts."""

    def __init__(self, max_calls: int | None, max_tokens: int | None, calls: int = 0, tokens: int = 0) -> None:
        self.max_calls, self.max_tokens = max_calls, max_tokens
        self.calls, self.tokens = calls, tokens

    @property
    def exhausted(self) -> bool:
        return (self.max_calls is not None and self.calls >= self.max_calls) or (
            self.max_tokens is not None and self.tokens >= self.max_tokens)

    def take_call(self) -> None:
        if self.exhausted:
            raise BudgetExhausted(f"budget spent: {self.calls} calls, {self.tokens} tokens")
        self.calls += 1


@dataclass(frozen=True)
class ChatReply:
    text: str
    tokens: int  # prompt + completion, as the endpoint reported (or counted locally)
    attempts: int  # 1 + retries it took


class ChatClient(Protocol):
    endpoint: ChatEndpoint

    async def chat(self, messages: Messages) -> ChatReply: ...

    async def aclose(self) -> None: ...


class OpenAICompatibleClient:
    """`POST /chat/completions` with retries, backoff, a shared budget and a concurrency limit."""

    def __init__(self, endpoint: ChatEndpoint, budget: Budget, limiter: anyio.CapacityLimiter, *,
                 max_retries: int, backoff_s: float, seed: int = 0) -> None:
        self.endpoint, self.budget, self.limiter = endpoint, budget, limiter
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self._key = _read_key(endpoint)
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._http = httpx.AsyncClient(base_url=endpoint.url + "/", headers=headers, timeout=endpoint.timeout_s,
                                       follow_redirects=False)  # a redirect must not carry the key elsewhere
        self._jitter = random.Random(seed)

    async def chat(self, messages: Messages) -> ChatReply:
        payload = {"model": self.endpoint.model, "messages": messages,
                   "temperature": self.endpoint.temperature, "max_tokens": self.endpoint.max_tokens}
        problem = "no attempt made"
        delay = self.backoff_s
        for attempt in range(1, self.max_retries + 2):
            self.budget.take_call()
            async with self.limiter:
                try:
                    response = await self._http.post("chat/completions", json=payload)
                except httpx.TimeoutException:
                    response, problem = None, f"no reply within {self.endpoint.timeout_s:g} s"
                except httpx.TransportError as exc:
                    response, problem = None, f"connection failed ({type(exc).__name__}: {self._redact(str(exc))})"
            if response is not None:
                if response.status_code == 200:
                    return self._parse(response, attempt)
                problem = f"HTTP {response.status_code}{self._body(response, 300)}"
                if response.status_code not in RETRYABLE_STATUS:
                    raise TeacherError(f"{self.endpoint.describe()} refused the request ({problem}); "
                                       + _fix_for(response.status_code, self.endpoint),
                                       fatal=response.status_code in (401, 403, 404))
                delay = max(delay, _retry_after(response))
            if attempt <= self.max_retries:
                log.warning("%s: %s; retry %d/%d in %.1f s", self.endpoint.describe(), problem, attempt,
                            self.max_retries, delay)
                await anyio.sleep(min(delay, MAX_BACKOFF_S) * (1 + 0.1 * self._jitter.random()))
                delay *= 2
        raise TeacherError(f"{self.endpoint.describe()} failed {self.max_retries + 1} time(s), last: {problem}; "
                           "check that the endpoint is up and serves this model, or raise max_retries / "
                           "teacher.timeout_s")

    def _parse(self, response: httpx.Response, attempt: int) -> ChatReply:
        try:
            body = response.json()
            text = body["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise TeacherError(f"{self.endpoint.describe()} answered with something that is not an OpenAI chat "
                               f"completion{self._body(response, 200)}; point base_url at the "
                               "endpoint's /v1") from None
        usage = body.get("usage") or {}
        tokens = usage.get("total_tokens")
        if not isinstance(tokens, int):
            tokens = (len(str(body)) + 3) // 4  # the endpoint reports no usage: a rough count
        self.budget.tokens += tokens
        return ChatReply(text=text.strip(), tokens=tokens, attempts=attempt)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _body(self, response: httpx.Response, limit: int) -> str:
        """The start of an answer's body for an error message, only from an endpoint the operator
        bound a key to: a keyless URL is the agent's choice, and quoting what it answered would read
        back any page the server can reach (`enhance.keys`)."""
        if not self._key:
            return f" ({len(response.content)} bytes, not quoted: the endpoint has no operator-bound key)"
        return f": {self._redact(response.text[:limit])!r}"

    async def aclose(self) -> None:
        await self._http.aclose()


class LocalChatClient:
    """A teacher or judge that is a Hugging Face model in this process (`hf:<model>`): greedy or
    sampled chat generation in a worker thread, one request at a time. A sampled reply is seeded with
    the job's seed, so a rerun of the job asks and hears the same."""

    def __init__(self, endpoint: ChatEndpoint, budget: Budget, seed: int = 0) -> None:
        self.endpoint, self.budget, self.seed = endpoint, budget, seed
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    async def chat(self, messages: Messages) -> ChatReply:
        self.budget.take_call()
        text, tokens = await anyio.to_thread.run_sync(self._generate, messages)
        self.budget.tokens += tokens
        return ChatReply(text=text, tokens=tokens, attempts=1)

    def _generate(self, messages: Messages) -> tuple[str, int]:
        """One reply through the project's one generate, prompted as a chat client prompts; the
        tokens it cost (prompt and reply), as an endpoint's usage counts them."""
        from finetune_mcp.model.generate import chat_prompt, generate
        from finetune_mcp.model.generation_settings import GenerationSettings

        with self._lock:
            if self._model is None:
                self._model, self._tokenizer = self._load()
            # model_construct: max_tokens may exceed the 4096 a sample request may ask for
            settings = GenerationSettings.model_construct(max_new_tokens=self.endpoint.max_tokens,
                                                          temperature=self.endpoint.temperature, seed=self.seed,
                                                          batch_size=1, alternatives=0)
            [reply] = generate(self._model, self._tokenizer, [chat_prompt(self._tokenizer, messages)], settings)
            return reply.text.strip(), reply.prompt_tokens + len(reply.token_ids)

    def _load(self) -> tuple[Any, Any]:
        """The model through the project's one loader, as an inference load of transformers (a teacher
        is not a model being trained, so no Unsloth and no 4 bits): bf16 on a GPU, fp32 on the CPU."""
        from finetune_mcp.model.loading import load_model
        from finetune_mcp.model.plan import LoadRequest, plan_load

        try:
            loaded = load_model(self.endpoint.local_model, plan_load(LoadRequest(backend="hf")))
        except FinetuneError as exc:
            raise TeacherError(f"cannot load the local model {self.endpoint.local_model!r} ({exc}); give "
                               "a local folder or a hub id in the Hugging Face cache") from None
        return loaded.model, loaded.tokenizer

    async def aclose(self) -> None:
        self._model = None


def make_client(endpoint: ChatEndpoint, budget: Budget, limiter: anyio.CapacityLimiter, *, max_retries: int,
                backoff_s: float, seed: int = 0) -> ChatClient:
    if endpoint.is_local:
        return LocalChatClient(endpoint, budget, seed)
    return OpenAICompatibleClient(endpoint, budget, limiter, max_retries=max_retries, backoff_s=backoff_s, seed=seed)


def check_endpoint_key(endpoint: ChatEndpoint, environ: dict[str, str] | None = None) -> None:
    """The endpoint may receive the key it names (`enhance.keys`), and the variable is set (its value
    is never read out here). Run by the server at job start and by the worker before each client."""
    if endpoint.is_local:
        return
    check_key_binding(endpoint.api_key_env, endpoint.url, endpoint.describe(), environ)
    env = os.environ if environ is None else environ
    if endpoint.api_key_env and not env.get(endpoint.api_key_env):
        raise ConfigError(f"the environment variable {endpoint.api_key_env} (the key for {endpoint.describe()}) "
                          "is not set in the server's environment; set it and restart the server, or pass "
                          "api_key_env=null for an endpoint without a key")


def _read_key(endpoint: ChatEndpoint) -> str | None:
    """The key's value, read only once the binding check passed (defence in depth: the spec the worker
    runs may not have come through the server's start check)."""
    check_endpoint_key(endpoint)
    return os.environ.get(endpoint.api_key_env) if endpoint.api_key_env else None


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", 0)))
    except ValueError:
        return 0.0


def _fix_for(status: int, endpoint: ChatEndpoint) -> str:
    if status in (401, 403):
        return f"check the key in {endpoint.api_key_env or '(no key sent: set api_key_env)'}"
    if status == 404:
        return "check base_url (it should end in /v1) and the model name"
    return "check the model name and the request limits (max_tokens)"


# -- what the teacher and the judge are asked -------------------------------------------------------

HINT_SYSTEM = (
    "You are a patient teacher. A student model tried to answer a question. Give ONE short hint (one or two "
    "sentences) that helps the student correct or firm up its reasoning, aimed at the parts it was unsure about. "
    "Do not state the final answer."
)
JUDGE_SYSTEM = (
    "You grade answers. Compare the student's answer with the reference answer and reply with one line "
    "'Score: N/10', where 10 means fully correct and 0 means wrong."
)


def hint_request(question: str, attempt: str, spans: list[str], correct: bool | None, reference: str) -> Messages:
    """The teacher's prompt for one hint (stored in the iteration log as `hint_request`)."""
    lines = [f"Question:\n{question}", f"Student's attempt:\n{attempt or '(empty)'}"]
    if spans:
        lines.append("The student was uncertain while writing: " + "; ".join(f"«{s}»" for s in spans[:5]))
    if correct is not None:
        lines.append("Its final answer was judged " + ("right, but the reasoning was unsure." if correct else "wrong."))
    lines.append(f"Reference answer (for you only; do not reveal it): {reference}")
    lines.append("Your hint:")
    return [{"role": "system", "content": HINT_SYSTEM}, {"role": "user", "content": "\n\n".join(lines)}]


def judge_request(question: str, answer: str, reference: str) -> Messages:
    content = f"Question:\n{question}\n\nReference answer:\n{reference}\n\nStudent's answer:\n{answer or '(empty)'}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]
