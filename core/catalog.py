"""The curated model catalog: ``models.toml``, shipped inside the ``mixtral_desk`` package.

Each ``[[models]]`` table is one downloadable GGUF quantization (one file, or the parts of a
split file) with the facts the app needs before downloading it: size, memory, context, licence,
architecture and expert counts. Facts that could not be checked against a source are listed in
the entry's ``unverified`` field, so the app never presents a guess as a fact (an unverified
``size_bytes`` is an estimate; the Hub's own size and sha256 win at download time).

A malformed file raises :class:`~mixtral_desk.core.errors.CatalogError` naming the file, the entry
and the field, e.g. ``models.toml: entry 'mixtral-8x7b-instruct-q4_k_m': size_bytes: Input should
be greater than 0``.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mixtral_desk.core.errors import CatalogError, NotFoundError, UserText
from mixtral_desk.core.hardware import Hardware
from mixtral_desk.core.i18n import N_, tr
from mixtral_desk.core.units import format_memory
from mixtral_desk.core.untrusted_json import MAX_SETTINGS_BYTES, LimitError, check_tree

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

#: The newest ``schema_version`` this code reads.
SCHEMA_VERSION = 1

FitVerdict = Literal["fits-gpu", "fits-ram", "tight", "too-large"]

_ID_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")



class CatalogEntry(BaseModel):
    """One downloadable model quantization from ``models.toml``."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=80)
    name: str = Field(min_length=1)
    family: str = Field(min_length=1)
    repo_id: str
    revision: str | None = None
    files: tuple[str, ...] = Field(min_length=1)
    quant: str = Field(min_length=1)
    size_bytes: int = Field(gt=0)
    sha256: tuple[str, ...] | None = None
    memory_bytes: int = Field(gt=0)
    default_context: int = Field(gt=0)
    trained_context: int = Field(gt=0)
    license: str = Field(min_length=1)
    architecture: str = Field(min_length=1)
    parameters: int = Field(gt=0)
    active_parameters: int | None = Field(default=None, gt=0)
    layers: int = Field(gt=0)
    expert_count: int | None = Field(default=None, gt=0)
    expert_used_count: int | None = Field(default=None, gt=0)
    expert_tensors: Literal["merged", "per-expert"] | None = None
    recommended: bool = False
    unverified: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    notes: str = ""

    # Fields that may be listed in ``unverified`` (facts, as opposed to bookkeeping).
    FACT_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "repo_id", "revision", "files", "quant", "size_bytes", "sha256", "memory_bytes",
        "default_context", "trained_context", "license", "architecture", "parameters",
        "active_parameters", "layers", "expert_count", "expert_used_count", "expert_tensors",
    })

    @field_validator("id")
    @classmethod
    def _id_is_slug(cls, value: str) -> str:
        if not _ID_RE.fullmatch(value):
            raise ValueError(
                "must be lower-case letters and digits separated by '-', '_' or '.'")
        return value

    @field_validator("repo_id")
    @classmethod
    def _repo_is_owner_name(cls, value: str) -> str:
        if not _REPO_RE.fullmatch(value) or ".." in value:
            raise ValueError("must look like 'owner/name'")
        return value

    @field_validator("revision")
    @classmethod
    def _revision_is_plain(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(ch.isspace() for ch in value)):
            raise ValueError("must be a commit hash, branch or tag without spaces")
        return value

    @field_validator("files")
    @classmethod
    def _files_are_gguf(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name.endswith(".gguf"):
                raise ValueError(f"{name!r} does not end in .gguf")
            if "\\" in name or name.startswith("/") or ".." in Path(name).parts:
                raise ValueError(f"{name!r} must be a plain path inside the repository")
        if len(set(value)) != len(value):
            raise ValueError("a file is listed twice")
        if len(value) > 1:
            cls._check_split(value)
        return value

    @staticmethod
    def _check_split(files: tuple[str, ...]) -> None:
        matches = [_SPLIT_RE.fullmatch(Path(name).name) for name in files]
        if not all(matches):
            raise ValueError(
                "several files must be the parts of one split GGUF, named like "
                "'Model-Q8_0-00001-of-00003.gguf'")
        stems = {(m["stem"], m["count"]) for m in matches if m}
        parts = [int(m["part"]) for m in matches if m]
        count = int(next(iter(stems))[1])
        if len(stems) != 1 or count != len(files) or parts != list(range(1, count + 1)):
            raise ValueError(
                f"split parts must be one model's parts 1..{len(files)} of {len(files)}, "
                "in order")

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha_as_tuple(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("sha256")
    @classmethod
    def _sha_is_hex(
        cls, value: tuple[str, ...] | None, info: ValidationInfo,
    ) -> tuple[str, ...] | None:
        if value is None:
            return None
        for digest in value:
            if not _SHA256_RE.fullmatch(digest):
                raise ValueError(f"{digest[:20]!r}… is not 64 lower-case hex digits")
        files = info.data.get("files")
        if files is not None and len(value) != len(files):
            raise ValueError(f"gives {len(value)} digests for {len(files)} files")
        return value

    @field_validator("trained_context")
    @classmethod
    def _default_within_trained(cls, value: int, info: ValidationInfo) -> int:
        default = info.data.get("default_context")
        if default is not None and default > value:
            raise ValueError(f"is smaller than default_context ({default})")
        return value

    @field_validator("active_parameters")
    @classmethod
    def _active_within_total(cls, value: int | None, info: ValidationInfo) -> int | None:
        total = info.data.get("parameters")
        if value is not None and total is not None and value > total:
            raise ValueError(f"is larger than parameters ({total})")
        return value

    @field_validator("expert_used_count")
    @classmethod
    def _experts_consistent(cls, value: int | None, info: ValidationInfo) -> int | None:
        experts = info.data.get("expert_count")
        if (value is None) != (experts is None) and "expert_count" in info.data:
            raise ValueError("expert_count and expert_used_count go together")
        if value is not None and experts is not None and value > experts:
            raise ValueError(f"is larger than expert_count ({experts})")
        return value

    @field_validator("unverified")
    @classmethod
    def _unverified_names_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - cls.FACT_FIELDS)
        if unknown:
            raise ValueError(f"names no fact field: {', '.join(unknown)}")
        return value

    # --- derived facts -------------------------------------------------------------------------

    @property
    def total_size(self) -> int:
        """Bytes to download (all parts together)."""
        return self.size_bytes

    @property
    def is_moe(self) -> bool:
        """True for a mixture-of-experts model."""
        return self.expert_count is not None

    @property
    def is_split(self) -> bool:
        """True when the model comes in several GGUF parts."""
        return len(self.files) > 1

    def is_verified(self, fact: str) -> bool:
        """Whether ``fact`` (a field name) was checked against a source."""
        return fact not in self.unverified

    def sha256_for(self, filename: str) -> str | None:
        """The expected sha256 of ``filename`` (one of :attr:`files`), or None if unknown."""
        if self.sha256 is None or filename not in self.files:
            return None
        return self.sha256[self.files.index(filename)]

    def local_paths(self, models_dir: Path) -> list[Path]:
        """Where the files live once downloaded: ``models_dir / id / <file name>``."""
        return [models_dir / self.id / Path(name).name for name in self.files]

    def is_downloaded(self, models_dir: Path) -> bool:
        """True when every file is present (and, if the size is verified, complete).

        Never raises: an unreadable folder counts as not downloaded.
        """
        try:
            paths = self.local_paths(models_dir)
            if not all(path.is_file() for path in paths):
                return False
            if self.is_verified("size_bytes"):
                return sum(path.stat().st_size for path in paths) == self.size_bytes
        except OSError:
            return False
        return True


class Catalog(BaseModel):
    """All entries of one ``models.toml``, in file order, with unique ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entries: tuple[CatalogEntry, ...]
    source: str = "models.toml"

    @field_validator("entries")
    @classmethod
    def _ids_unique(cls, value: tuple[CatalogEntry, ...]) -> tuple[CatalogEntry, ...]:
        seen: set[str] = set()
        for entry in value:
            if entry.id in seen:
                raise ValueError(f"duplicate id {entry.id!r}")
            seen.add(entry.id)
        return value

    def __iter__(self) -> Iterator[CatalogEntry]:  # type: ignore[override]
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, model_id: object) -> bool:
        return any(entry.id == model_id for entry in self.entries)

    @property
    def ids(self) -> list[str]:
        """Every entry id, in file order."""
        return [entry.id for entry in self.entries]

    def get(self, model_id: str) -> CatalogEntry:
        """The entry with id ``model_id``.

        Raises:
            NotFoundError: no such id; the message suggests close matches.
        """
        for entry in self.entries:
            if entry.id == model_id:
                return entry
        close = difflib.get_close_matches(model_id.lower(), self.ids, n=3, cutoff=0.5)
        if close:
            raise NotFoundError(N_("No model {id} in the catalog. Did you mean: {close}?"),
                                id=repr(model_id), close=", ".join(close))
        raise NotFoundError(N_("No model {id} in the catalog."), id=repr(model_id))

    def family(self, family: str) -> list[CatalogEntry]:
        """Entries of one family (e.g. every Mixtral-8x7B-Instruct quant), in file order."""
        return [entry for entry in self.entries if entry.family == family]


# --- loading -----------------------------------------------------------------------------------

def _packaged_catalog() -> tuple[str, str]:
    resource = resources.files("mixtral_desk") / "models.toml"
    return str(resource), resource.read_text(encoding="utf-8")


def _entry_label(index: int, raw: object) -> UserText:
    if isinstance(raw, Mapping):
        model_id = raw.get("id")
        if isinstance(model_id, str) and model_id.strip():
            return UserText(N_("entry {id}"), id=repr(model_id.strip()))
    return UserText(N_("entry #{number}"), number=index + 1)


def _field_label(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(entry)"


def _raise_validation(source: str, label: UserText, error: ValidationError) -> NoReturn:
    problems = error.errors(include_url=False)
    first = problems[0]
    message = first["msg"].removeprefix("Value error, ")  # pydantic's words: English
    if len(problems) > 1:
        raise CatalogError(N_("{source}: {entry}: {field}: {problem} (and {more} more "
                              "problem(s))"), source=source, entry=label,
                           field=_field_label(first["loc"]), problem=message,
                           more=len(problems) - 1)
    raise CatalogError(N_("{source}: {entry}: {field}: {problem}"), source=source, entry=label,
                       field=_field_label(first["loc"]), problem=message)


def parse_catalog(text: str, source: str = "models.toml") -> Catalog:
    """Parse the text of a ``models.toml``; ``source`` names it in error messages.

    Raises:
        CatalogError: invalid TOML (with line and column), a newer ``schema_version``, or an
            entry that fails validation (naming the entry and the field) or repeats an id.
    """
    if len(text) > MAX_SETTINGS_BYTES:
        raise CatalogError(N_("{source}: larger than {limit} bytes"), source=source,
                           limit=f"{MAX_SETTINGS_BYTES:,}")
    try:
        document: dict[str, Any] = tomllib.loads(text)
        check_tree(document)
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(N_("{source}: not valid TOML: {error}"), source=source,
                           error=str(error)) from error
    except LimitError as error:
        raise CatalogError(N_("{source}: {field} {problem}"), source=source,
                           field=error.field or source, problem=error.problem) from None
    except (RecursionError, ValueError) as error:  # tomllib: deep nesting, a 5,000-digit number
        raise CatalogError(N_("{source}: not valid TOML: {error}"), source=source,
                           error=str(error) or type(error).__name__) from None

    version = document.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version < 1:
        raise CatalogError(N_("{source}: schema_version: must be a positive integer"),
                           source=source)
    if version > SCHEMA_VERSION:
        raise CatalogError(
            N_("{source}: schema_version: {version} is newer than this Mixtral Desk reads "
               "({newest}); update the app"), source=source, version=version,
            newest=SCHEMA_VERSION)
    unknown = sorted(set(document) - {"schema_version", "models"})
    if unknown:
        raise CatalogError(N_("{source}: {key}: unknown top-level key"), source=source,
                           key=unknown[0])
    raw_entries = document.get("models")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise CatalogError(N_("{source}: models: expected one or more [[models]] tables"),
                           source=source)

    entries: list[CatalogEntry] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(raw_entries):
        label = _entry_label(index, raw)
        try:
            entry = CatalogEntry.model_validate(raw)
        except ValidationError as error:
            _raise_validation(source, label, error)
        if entry.id in first_index:
            raise CatalogError(
                N_("{source}: {entry}: id: duplicate id, already used by entry #{number}"),
                source=source, entry=label, number=first_index[entry.id] + 1)
        first_index[entry.id] = index
        entries.append(entry)
    return Catalog(entries=tuple(entries), source=source)


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the packaged ``models.toml``, or the file at ``path``.

    Raises:
        CatalogError: the file cannot be read or is malformed; the message names the file,
            the entry and the field.
    """
    if path is None:
        try:
            source, text = _packaged_catalog()
        except (OSError, ModuleNotFoundError) as error:
            raise CatalogError(N_("models.toml: cannot read the packaged catalog: {error}"),
                               error=str(error)) from error
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CatalogError(N_("{source}: cannot read: {error}"), source=source,
                               error=str(error)) from error
    return parse_catalog(text, source)


# --- will it fit? ------------------------------------------------------------------------------

class FitHint(NamedTuple):
    """A verdict on whether a model fits this machine, and one line saying why."""

    verdict: FitVerdict
    reason: str


#: How the planner's verdicts show as catalog fit hints.
PLAN_FIT: dict[str, FitVerdict] = {"gpu": "fits-gpu", "gpu+cpu-experts": "fits-gpu",
                                   "partial": "tight", "cpu": "fits-ram",
                                   "too-large": "too-large"}


def fit_hint(entry: CatalogEntry, hardware: Hardware) -> FitHint:
    """Whether ``entry`` runs here, from the offload planner (:mod:`.planner`) working on the
    entry's figures (size, layers, experts, memory at its default context).

    ``fits-gpu``: all layers on the GPU (possibly with the experts of some layers in RAM).
    ``fits-ram``: on the CPU in the RAM available now. ``tight``: only some layers on the GPU, or
    only after closing other programs (it would fit the machine's total RAM). ``too-large``:
    more than RAM and GPU together. The reason is the plan's explanation (translated). Raises
    nothing.
    """
    from mixtral_desk.core.planner import machine_from_hardware, plan_for_catalog_entry

    plan = plan_for_catalog_entry(entry, machine_from_hardware(hardware))
    if plan.fits:
        return FitHint(PLAN_FIT[plan.verdict], plan.explanation)
    if hardware.ram_total > hardware.ram_available:
        roomy = plan_for_catalog_entry(entry, machine_from_hardware(hardware,
                                                                    ram=hardware.ram_total))
        if roomy.fits:
            return FitHint("tight", tr("fits only after closing other programs ({free} of RAM "
                                       "free): {explanation}",
                                       free=format_memory(hardware.ram_available),
                                       explanation=roomy.explanation))
    return FitHint("too-large", plan.explanation)
