"""Load and validate ``requirements.toml``, the single source of requirement IDs.

A malformed catalogue raises :class:`CatalogueError` with a one-line message that names the entry and
the field; nothing else escapes. Every other module looks requirements up with :func:`requirement`.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from pathlib import Path

import attrs

ROLES = ("driver", "device")
KEYWORDS = ("MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY")
_FIELDS = {"id", "section", "label", "role", "keyword", "features", "text", "checkable", "reason",
           "derived", "legacy", "profile"}
_REQUIRED = ("id", "section", "label", "role", "keyword", "features", "text", "checkable")


class CatalogueError(Exception):
    """The catalogue file is malformed, or an unknown requirement ID was cited."""


@attrs.frozen
class Requirement:
    """One normative statement.

    ``role`` is the side the statement binds. ``features`` must all be negotiated for it to apply.
    ``checkable`` is False when nothing observable from outside an implementation can show a breach;
    ``reason`` then says why. ``derived`` is set for statements the text implies without a keyword.
    ``profile`` is "virtio-1.4" for the spec; other profiles (the 2016 seed protocol) are opt-in.
    """

    id: str
    section: str
    label: str
    role: str = attrs.field(validator=attrs.validators.in_(ROLES))
    keyword: str = attrs.field(validator=attrs.validators.in_(KEYWORDS))
    features: tuple[str, ...]
    text: str
    checkable: bool
    reason: str = ""
    derived: str = ""
    legacy: bool = False
    #: "virtio-1.4" for spec text; another name for an opt-in profile (the 2016 seed protocol).
    profile: str = "virtio-1.4"

    @property
    def is_permission(self) -> bool:
        return self.keyword == "MAY"

    def cite(self) -> str:
        return f"{self.id} (§{self.section}, {self.keyword})"


def _parse_entry(n: int, raw: object, path: str) -> Requirement:
    where = f"{path}: requirement #{n}"
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: expected a table")
    if "id" in raw:
        where = f"{path}: {raw['id']}"
    unknown = set(raw) - _FIELDS
    if unknown:
        raise CatalogueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    for key in _REQUIRED:
        if key not in raw:
            raise CatalogueError(f"{where}: missing field {key!r}")
    for key in ("id", "section", "label", "role", "keyword", "text", "reason", "derived", "profile"):
        if key in raw and not isinstance(raw[key], str):
            raise CatalogueError(f"{where}: field {key!r} must be a string")
    if not isinstance(raw["checkable"], bool):
        raise CatalogueError(f"{where}: field 'checkable' must be true or false")
    if not isinstance(raw["features"], list) or not all(isinstance(f, str) for f in raw["features"]):
        raise CatalogueError(f"{where}: field 'features' must be a list of feature names")
    if raw["role"] not in ROLES:
        raise CatalogueError(f"{where}: field 'role' must be one of {ROLES}, not {raw['role']!r}")
    if raw["keyword"] not in KEYWORDS:
        raise CatalogueError(f"{where}: field 'keyword' must be one of {KEYWORDS}, not {raw['keyword']!r}")
    if not raw["checkable"] and not raw.get("reason"):
        raise CatalogueError(f"{where}: not checkable but no 'reason' given")
    return Requirement(**{**raw, "features": tuple(raw["features"])})


def load(path: str | Path | None = None) -> dict[str, Requirement]:
    """Parse a catalogue file (default: the packaged one) into ``{id: Requirement}``."""
    if path is None:
        text = resources.files("spec").joinpath("requirements.toml").read_text(encoding="utf-8")
        name = "spec/requirements.toml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise CatalogueError(f"{path}: cannot read catalogue: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise CatalogueError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
        name = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogueError(f"{name}: not valid TOML: {e}") from None
    entries = data.get("requirement")
    if not isinstance(entries, list) or not entries:
        raise CatalogueError(f"{name}: no [[requirement]] entries")
    out: dict[str, Requirement] = {}
    for n, raw in enumerate(entries, 1):
        req = _parse_entry(n, raw, name)
        if req.id in out:
            raise CatalogueError(f"{name}: duplicate requirement id {req.id}")
        out[req.id] = req
    return out


@cache
def catalogue() -> dict[str, Requirement]:
    """The packaged catalogue, parsed once."""
    return load()


def requirement(req_id: str) -> Requirement:
    """Look up one requirement; an unknown ID is a :class:`CatalogueError`."""
    try:
        return catalogue()[req_id]
    except KeyError:
        raise CatalogueError(f"unknown requirement id {req_id!r}") from None
