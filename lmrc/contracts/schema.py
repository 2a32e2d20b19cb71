"""A dataset's schema as data: its entity types and relation types, shared by every stage.

A schema file (JSON) names the entity types the tagger tags and the proposer embeds, the relations
(id, name, a one-line description, optional argument types, symmetric or inverse of another), and,
where the data spells "no relation" as a label (CDR's ``NR``), that label: it is dropped when the
data is read, never learned as a relation. A model bundle carries the schema it was trained with,
and every stage takes names and types from it. Re-DocRED's schema ships as the default
(``lmrc/contracts/schemas/redocred.json``), CDR's beside it.

``label_direction``: ``as-given`` (a label's head is the relation's head) or
``by-argument-types``, for data converted with each pair in either order (the CDR conversion): a
label whose head and tail types are its relation's declared argument types the other way round is
turned around when read, so that the graph says "chemical induces disease", never the reverse.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: A relation's id: a Wikidata P-id, CDR's CID, or any short token a user picks.
RELATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ENTITY_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
RelationTypeId = Annotated[str, Field(pattern=RELATION_ID_PATTERN)]
EntityTypeName = Annotated[str, Field(pattern=ENTITY_TYPE_PATTERN)]

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
DEFAULT_SCHEMA = "redocred"
#: The proposer's type index 0 stands for a type the model never saw.
UNKNOWN_TYPE = "UNKNOWN"


class SchemaError(ValueError):
    """A schema file that cannot be used: the message is one line naming the file and the field."""


class RelationType(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: RelationTypeId
    name: str = Field(min_length=1, max_length=256)
    description: str = Field(default="", max_length=512, description="One line: what the relation means.")
    head_types: tuple[EntityTypeName, ...] = Field(default=(), description="Empty: any entity type.")
    tail_types: tuple[EntityTypeName, ...] = Field(default=(), description="Empty: any entity type.")
    symmetric: bool = False
    inverse: RelationTypeId | None = Field(default=None, description="The relation that says it backwards.")

    def allows(self, head_type: str, tail_type: str) -> bool:
        return (not self.head_types or head_type in self.head_types) and (
            not self.tail_types or tail_type in self.tail_types
        )


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    entity_types: tuple[EntityTypeName, ...] = Field(min_length=1)
    relations: tuple[RelationType, ...] = Field(min_length=1)
    no_relation: RelationTypeId | None = Field(
        default=None, description="The label the data uses for a pair without a relation (CDR: NR)."
    )
    label_direction: Literal["as-given", "by-argument-types"] = "as-given"

    @model_validator(mode="after")
    def _consistent(self) -> Schema:
        if len(set(self.entity_types)) != len(self.entity_types):
            raise ValueError("entity_types: a type is listed twice")
        if UNKNOWN_TYPE in self.entity_types:
            raise ValueError(f"entity_types: {UNKNOWN_TYPE} is reserved")
        by_id = {relation.id: relation for relation in self.relations}
        if len(by_id) != len(self.relations):
            raise ValueError("relations: an id is listed twice")
        if self.no_relation in by_id:
            raise ValueError(f"no_relation: {self.no_relation!r} is also a relation")
        declared = set(self.entity_types)
        for relation in self.relations:
            where = f"relations[{relation.id}]"
            for role in ("head_types", "tail_types"):
                unknown = set(getattr(relation, role)) - declared
                if unknown:
                    raise ValueError(f"{where}.{role}: {sorted(unknown)} not in entity_types")
            if relation.symmetric and set(relation.head_types) != set(relation.tail_types):
                raise ValueError(f"{where}: a symmetric relation needs the same head and tail types")
            if relation.inverse is not None:
                other = by_id.get(relation.inverse)
                if other is None:
                    raise ValueError(f"{where}.inverse: {relation.inverse!r} is not a relation")
                if other.inverse != relation.id:
                    raise ValueError(f"{where}.inverse: {other.id} must name {relation.id} as its inverse")
        if self.label_direction == "by-argument-types" and any(
            not (r.head_types and r.tail_types) for r in self.relations
        ):
            raise ValueError(
                "label_direction: by-argument-types needs head_types and tail_types on every relation"
            )
        return self

    @property
    def relation_ids(self) -> list[str]:
        """Relation ids in the order of the proposer's relation head (sorted: stable across files)."""
        return sorted(relation.id for relation in self.relations)

    @property
    def relation_names(self) -> dict[str, str]:
        return {relation.id: relation.name for relation in sorted(self.relations, key=lambda r: r.id)}

    def relation(self, relation_id: str) -> RelationType:
        return next(relation for relation in self.relations if relation.id == relation_id)

    @property
    def type_pairs(self) -> list[tuple[str, str]] | None:
        """The (head type, tail type) pairs some relation allows, or None when any pair may hold
        one: the proposer scores only those pairs."""
        if any(not (r.head_types and r.tail_types) for r in self.relations):
            return None
        return sorted({(h, t) for r in self.relations for h in r.head_types for t in r.tail_types})

    def oriented(self, relation_id: str, head_type: str, tail_type: str) -> bool | None:
        """Whether a label of ``relation_id`` between these types reads the right way (True),
        must be turned around (False, only with ``by-argument-types``), or breaks the relation's
        argument types either way (None)."""
        relation = self.relation(relation_id)
        if relation.allows(head_type, tail_type):
            return True
        if self.label_direction == "by-argument-types" and relation.allows(tail_type, head_type):
            return False
        return None

    def fingerprint(self) -> str:
        """A short hash of what the models depend on (types, relation ids and their order)."""
        core = {"entity_types": list(self.entity_types), "relations": self.relation_ids}
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]


def parse_schema(text: str, source: str) -> Schema:
    """A schema from JSON text; SchemaError, one line naming ``source`` and the field, otherwise."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SchemaError(f"{source}: not JSON ({error})") from None
    try:
        return Schema.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(schema)"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise SchemaError(f"{source}: {where}: {first['msg']}{more}") from None


def load_schema(path: str | Path) -> Schema:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SchemaError(f"{path}: cannot read the schema ({error.strerror})") from None
    return parse_schema(text, str(path))


def shipped_schemas() -> list[str]:
    return sorted(path.stem for path in SCHEMAS_DIR.glob("*.json"))


@cache
def shipped_schema(name: str = DEFAULT_SCHEMA) -> Schema:
    """A schema the project ships (``redocred``, the default; ``cdr``)."""
    path = SCHEMAS_DIR / f"{name}.json"
    if not path.exists():
        raise SchemaError(f"no shipped schema {name!r}; shipped: {', '.join(shipped_schemas())}")
    return load_schema(path)


def resolve_schema(name_or_path: str | Path) -> Schema:
    """A schema file's path, or the name of a shipped one."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return load_schema(path)
    return shipped_schema(str(name_or_path))
