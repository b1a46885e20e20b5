"""The speeds this machine measured: past replies' decode and prompt speeds, by model and placement.

After a reply from a local model the session calls :func:`remember_reply`: the reply's decode
speed (``ReplyStats.decode_tokens_per_s``, from :data:`MIN_DECODE_TOKENS` tokens on) and, when it
evaluated a prompt of :data:`MIN_PROMPT_TOKENS` tokens or more, its prompt speed (tokens evaluated
over the time to the first token) go into ``measured-speeds.json`` in the cache folder: per model
(file name and size), per placement (GPU layers, layers whose experts stay in RAM and the kinds of
the split layer's, decoding threads, KV cache type), the last :data:`MAX_SAMPLES` of each kind,
with the context they were measured at. The planner then calibrates its predictions for that model
with them and shows them next to its prediction (:func:`~.planner.plan_offload`'s ``measured``).

The file is written atomically (:mod:`.atomic_write`) and says which hardware it was measured on:
a missing or corrupt file, or one from other hardware (another CPU, core count, RAM size), counts
as empty. Nothing here raises: a speed that cannot be remembered is only logged.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import ModelInfo, ReplyStats
    from .gguf.model_file import ModelFacts
    from .session.loading import LoadChoice, LoadReport

_log = logging.getLogger(__name__)

FILE_NAME = "measured-speeds.json"
VERSION = 1
#: Samples kept per model, placement and kind (the newest).
MAX_SAMPLES = 8
#: A decode speed counts from this many generated tokens; a prompt speed from this many evaluated.
MIN_DECODE_TOKENS = 8
MIN_PROMPT_TOKENS = 64
#: Placements remembered per model (the most recently used).
MAX_PLACEMENTS = 16

_lock = threading.Lock()
_fingerprint: list[str] = []

PlacementKey = tuple[int, int, tuple[str, ...], int | None, str]


@dataclass(frozen=True)
class MeasuredSpeed:
    """One measured speed and the placement it was measured with. ``kind`` ``decode``:
    ``position`` is the average context while decoding, ``tokens`` the tokens generated;
    ``prompt``: ``position`` is the context before the prompt, ``tokens`` the tokens evaluated."""

    n_gpu_layers: int
    n_cpu_moe: int
    cpu_moe_tensors: tuple[str, ...]
    threads: int | None
    kv_type: str
    kind: str
    tokens_per_s: float
    position: float
    tokens: int

    @property
    def placement_key(self) -> PlacementKey:
        """What must be equal for a plan to be "this placement"."""
        return (self.n_gpu_layers, self.n_cpu_moe, self.cpu_moe_tensors, self.threads,
                self.kv_type)


@dataclass(frozen=True)
class ModelSpeeds:
    """Everything measured with one model on this machine."""

    identity: str
    samples: tuple[MeasuredSpeed, ...] = ()


def model_identity(path: Path) -> str | None:
    """A model's identity across moves: its file name and size (None when it cannot be read)."""
    try:
        return f"{path.name}|{path.stat().st_size}"
    except OSError:
        return None


def speeds_file() -> Path:
    """``measured-speeds.json`` in the cache folder."""
    from .paths import data_paths

    return data_paths().cache_dir / FILE_NAME


def hardware_key() -> str:
    """This machine's hardware fingerprint (:func:`~.cpu_speed.hardware_fingerprint`), worked
    out once per process."""
    if not _fingerprint:
        from .cpu_speed import hardware_fingerprint
        from .hardware import detect_hardware

        _fingerprint.append(hardware_fingerprint(
            detect_hardware(probe_gpus=False, probe_speed=False)))
    return _fingerprint[0]


def _read(path: Path, fingerprint: str) -> dict[str, Any]:
    """The file's models (empty for a missing, corrupt or other hardware's file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION \
            or data.get("hardware") != fingerprint or not isinstance(data.get("models"), dict):
        return {}
    models: dict[str, Any] = data["models"]
    return models


def _placement_text(key: PlacementKey) -> str:
    gpu, n, kinds, threads, kv = key
    return f"gpu={gpu};cpu_moe={n};split={','.join(kinds)};threads={threads or ''};kv={kv}"


def _parse_placement(text: str) -> PlacementKey:
    fields = dict(part.split("=", 1) for part in text.split(";"))
    kinds = tuple(k for k in fields["split"].split(",") if k)
    threads = int(fields["threads"]) if fields["threads"] else None
    return int(fields["gpu"]), int(fields["cpu_moe"]), kinds, threads, fields["kv"]


def load_model_speeds(identity: str | None, *, path: Path | None = None,
                      fingerprint: str | None = None) -> ModelSpeeds | None:
    """What was measured with the model ``identity`` on this hardware (None when nothing was).
    Raises nothing: a bad entry is skipped."""
    if identity is None:
        return None
    models = _read(path or speeds_file(), fingerprint or hardware_key())
    entry = models.get(identity)
    samples: list[MeasuredSpeed] = []
    if isinstance(entry, dict):
        for text, kinds in entry.items():
            try:
                key = _parse_placement(text)
                for kind in ("decode", "prompt"):
                    for rate, position, tokens in kinds.get(kind, []):
                        if float(rate) > 0:
                            samples.append(MeasuredSpeed(*key, kind, float(rate),
                                                         float(position), int(tokens)))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return ModelSpeeds(identity, tuple(samples)) if samples else None


def speeds_for_facts(facts: ModelFacts, *, path: Path | None = None) -> ModelSpeeds | None:
    """What was measured with the model of ``facts`` on this machine. Raises nothing."""
    return load_model_speeds(model_identity(facts.path), path=path)


def record(identity: str, key: PlacementKey, stats: ReplyStats, *, path: Path | None = None,
           fingerprint: str | None = None) -> bool:
    """Remember the speeds of one reply (see the module docstring); whether anything was
    recorded. Raises nothing."""
    new: dict[str, list[float]] = {}
    if stats.completion_tokens >= MIN_DECODE_TOKENS and stats.decode_tokens_per_s > 0:
        new["decode"] = [round(stats.decode_tokens_per_s, 3),
                         stats.prompt_tokens + stats.completion_tokens / 2,
                         stats.completion_tokens]
    evaluated = stats.prompt_tokens - stats.cached_tokens
    if evaluated >= MIN_PROMPT_TOKENS and stats.time_to_first_token_s > 0:
        new["prompt"] = [round(evaluated / stats.time_to_first_token_s, 3), stats.cached_tokens,
                         evaluated]
    if not new:
        return False
    file = path or speeds_file()
    hardware = fingerprint or hardware_key()
    with _lock:
        models = _read(file, hardware)
        placements = models.pop(identity, None)
        placements = placements if isinstance(placements, dict) else {}
        text = _placement_text(key)
        kinds = placements.pop(text, None)
        kinds = kinds if isinstance(kinds, dict) else {}
        for kind, sample in new.items():
            kept = kinds.get(kind)
            kinds[kind] = [*(kept if isinstance(kept, list) else []), sample][-MAX_SAMPLES:]
        placements[text] = kinds  # the newest placement last
        models[identity] = dict(list(placements.items())[-MAX_PLACEMENTS:])
        data = {"version": VERSION, "hardware": hardware, "models": models}
        try:
            from .atomic_write import write_atomic

            write_atomic(file, json.dumps(data, indent=1))
        except OSError as error:
            _log.info("cannot remember the reply's speed in %s: %s", file, error)
            return False
    return True


def remember_reply(info: ModelInfo | None, report: LoadReport | None,
                   choice: LoadChoice | None, stats: ReplyStats | None) -> bool:
    """Remember a local model's reply speeds with the placement it was loaded with (GPU layers
    as llama.cpp offloaded them; the plan's split layer; the threads and KV type of the load).
    Whether anything was recorded. Raises nothing."""
    if info is None or stats is None or report is None or report.settings is None:
        return False
    identity = model_identity(Path(info.path))
    if identity is None:
        return False
    from .engine.worker import physical_cores

    settings = report.settings
    threads = (choice.n_threads if choice is not None else None) or settings.n_threads \
        or physical_cores()
    split = report.plan.cpu_moe_tensors if report.plan is not None else ()
    key: PlacementKey = (info.n_gpu_layers, report.n_cpu_moe, tuple(split), threads,
                         settings.kv_type)
    try:
        return record(identity, key, stats)
    except Exception as error:  # remembering a speed must never break a chat turn
        _log.info("cannot remember the reply's speed: %s", error)
        return False


__all__ = [
    "MAX_SAMPLES",
    "MeasuredSpeed",
    "ModelSpeeds",
    "load_model_speeds",
    "model_identity",
    "record",
    "remember_reply",
    "speeds_file",
    "speeds_for_facts",
]
