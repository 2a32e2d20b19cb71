"""Which graph node an entity of a document becomes.

A node is keyed by its type and normalised name (NFKC, case-folded, white space collapsed), so case
and spacing variants of a name meet, and the same entity in many documents is one node. Places are
resolved further: a country's people's adjective ("French", which DocRED types as a place) and a
country's long names ("Federal Republic of Germany", "United States of America") become the
country's node ("France", "Germany", "United States"). The annotator's entities and the relation
events stay as DocRED annotates them (its scores unchanged); the graph keeps the name the document
used on the document's MENTIONS edge (``names``) and on each edge (``named_as``).

The country table comes from countryinfo's data (MIT; names, alternative spellings, demonyms and
populations of 250 countries and territories) rather than a hand-typed list. An adjective several
countries share ("Chinese": China, Hong Kong, Macau) goes to the most populous when it has ten
times the population of the next, and to none otherwise ("Burmese": Burma and Myanmar, listed twice).
"""

from __future__ import annotations

import functools
import unicodedata
import urllib.parse
from collections import defaultdict

#: The types whose entities may be countries: DocRED's LOC, and GPE where a schema uses it.
PLACE_TYPES = frozenset({"LOC", "GPE"})


def normalise_name(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def entity_id(name: str, entity_type: str) -> str:
    """``TYPE:normalised name``; the type is percent-encoded, so the first ``:`` always ends it and
    no two (name, type) pairs share an id (``("b:c", "A")`` and ``("c", "A:b")`` did)."""
    return f"{urllib.parse.quote(entity_type, safe='')}:{normalise_name(name)}"


@functools.cache
def country_names() -> dict[str, str]:
    """Normalised name, alternative spelling or demonym -> the country's name."""
    from countryinfo import all_countries

    found: dict[str, set[tuple[int, str]]] = defaultdict(set)
    for country in all_countries():
        name = country.name()
        aliases = {name}
        try:
            aliases.add(country.demonym() or "")
            # Only the long forms ("Federal Republic of Germany"): one-word spellings are codes
            # ("DEU") or native names that are English words elsewhere ("Island", "Mann").
            aliases.update(alias for alias in country.alt_spellings() or [] if " " in alias.strip())
        except (KeyError, ValueError, AttributeError):
            pass
        try:
            population = int(country.population() or 0)
        except (KeyError, ValueError, TypeError):
            population = 0
        for alias in aliases:
            if alias.strip() and "/" not in alias:
                found[normalise_name(alias)].add((population, name))
    table: dict[str, str] = {}
    for alias, countries in found.items():
        ranked = sorted(countries, reverse=True)
        if len(ranked) == 1 or ranked[0][0] > 10 * ranked[1][0]:
            table[alias] = ranked[0][1]
    return table


def graph_name(name: str, entity_type: str) -> str:
    """The name of the node an entity becomes: a country's for its adjective or other names."""
    if entity_type in PLACE_TYPES:
        return country_names().get(normalise_name(name), name)
    return name


def node_id(name: str, entity_type: str) -> str:
    """The id of the node an entity named ``name`` of ``entity_type`` becomes."""
    return entity_id(graph_name(name, entity_type), entity_type)
