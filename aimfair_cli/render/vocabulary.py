"""The phrase vocabulary of the offline generator: which words in a prompt select which face attribute.

The vocabulary is data (`prompts/vocabulary.yaml`, shipped as `aimfair_cli.prompts`): attribute -> value ->
phrases, the attributes a template prompt may add as details, and the stereotyped defaults the `procedural`
generator draws for attributes a prompt leaves out. `Vocabulary.parse` reads a prompt longest phrase first on
word boundaries, so "not smiling" is not "smiling" and "female" is not "male"; unknown words are ignored.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError

VOCABULARY_FILE = "vocabulary.yaml"

MSG_NOT_FOUND = "vocabulary file not found: {path}"
MSG_INVALID = "{path}: not a valid vocabulary file ({reason})"
MSG_DUPLICATE = "{path}: phrase '{phrase}' selects both {first} and {second}"

# Same boundaries as aimfair_cli.core.tasks: a hyphen joins words, so "white" is not found inside "non-white".
_BEFORE = r"(?<![\w-])"
_AFTER = r"(?![\w-])"


def _value_key(value: Any) -> str:
    # YAML 1.1 reads an unquoted yes/no as a bool; the vocabulary's values are always strings.
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass
class Vocabulary:
    """A loaded vocabulary. `attributes[attr][value]` is the list of phrases that select `value`."""

    attributes: dict[str, dict[str, list[str]]]
    details: list[str]
    stereotypes: dict[str, Any] = field(default_factory=dict)
    task_attributes: dict[str, str] = field(default_factory=dict)
    compounds: dict[str, dict[str, dict[str, list[str]]]] = field(default_factory=dict)  # noun -> attr -> value -> modifiers
    path: Path | None = None
    sha256: str = ""

    def __post_init__(self) -> None:
        self._index: dict[str, tuple[str, str]] = {}
        for attr, values in self.attributes.items():
            for value, phrases in values.items():
                for phrase in phrases:
                    key = phrase.lower()
                    if key in self._index and self._index[key] != (attr, value):
                        first = ".".join(self._index[key])
                        raise ConfigError(
                            MSG_DUPLICATE.format(path=self.path, phrase=phrase, first=first, second=f"{attr}.{value}")
                        )
                    self._index[key] = (attr, value)
        # One alternation, longest phrase first: at each position the regex engine tries the longer phrases
        # before the shorter ones they contain ("not smiling" before "smiling").
        ordered = sorted(self._index, key=lambda p: (-len(p), p))
        alternation = "|".join(re.escape(p) for p in ordered)
        self._pattern = re.compile(f"{_BEFORE}(?:{alternation}){_AFTER}", re.IGNORECASE) if ordered else None
        # "long curly black hair": a run of modifiers right before a head noun. Within one noun a modifier
        # names one (attribute, value); the same word may mean different things before different nouns.
        self._compounds: list[tuple[re.Pattern, re.Pattern, dict[str, tuple[str, str]]]] = []
        for noun, attrs in self.compounds.items():
            mods: dict[str, tuple[str, str]] = {}
            for attr, values in attrs.items():
                for value, words in values.items():
                    for word in words:
                        key = word.lower()
                        if key in mods and mods[key] != (attr, value):
                            raise ConfigError(MSG_DUPLICATE.format(
                                path=self.path, phrase=f"{word} {noun}", first=".".join(mods[key]),
                                second=f"{attr}.{value}"))
                        mods[key] = (attr, value)
            mod = "|".join(re.escape(w) for w in sorted(mods, key=lambda w: (-len(w), w)))
            run = rf"{_BEFORE}((?:(?:{mod})(?:\s*,\s*|\s+and\s+|\s+))+){re.escape(noun)}{_AFTER}"
            self._compounds.append((re.compile(run, re.IGNORECASE),
                                    re.compile(f"{_BEFORE}(?:{mod}){_AFTER}", re.IGNORECASE), mods))

    def values(self, attr: str) -> list[str]:
        return list(self.attributes[attr])

    def phrases(self, attr: str, value: str) -> list[str]:
        """The phrases that select `value` of `attr` (the first is the canonical one)."""
        return list(self.attributes[attr][_value_key(value)])

    def lookup(self, phrase: str) -> tuple[str, str] | None:
        """The (attribute, value) one phrase selects, or None."""
        return self._index.get(phrase.lower())

    def matches(self, prompt: str) -> list[tuple[str, str, str]]:
        """Every (phrase as written, attribute, value) found in the prompt, in reading order.

        Phrases and modifier runs ("long curly black hair") compete for the text: the longer span wins, a
        phrase wins a tie ("long wavy hair" is the phrase for wavy, not "long" + "wavy").
        """
        spans: list[tuple[int, int, int, Any]] = []  # (start, end, priority, payload); priority 0 = phrase
        if self._pattern is not None:
            for m in self._pattern.finditer(prompt):
                spans.append((m.start(), m.end(), 0, m))
        for run_re, mod_re, mods in self._compounds:
            for m in run_re.finditer(prompt):
                spans.append((m.start(), m.end(), 1, (m, mod_re, mods)))
        taken: list[tuple[int, int]] = []
        found: list[tuple[int, str, str, str]] = []  # (position, text, attr, value)
        for start, end, priority, payload in sorted(spans, key=lambda s: (s[0] - s[1], s[2], s[0])):
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            if priority == 0:
                attr, value = self._index[payload.group(0).lower()]
                found.append((start, payload.group(0), attr, value))
            else:
                m, mod_re, mods = payload
                for w in mod_re.finditer(m.group(1)):
                    attr, value = mods[w.group(0).lower()]
                    found.append((m.start(1) + w.start(), w.group(0), attr, value))
        return [(t, a, v) for _, t, a, v in sorted(found, key=lambda f: f[0])]

    def parse(self, prompt: str) -> dict[str, str]:
        """attribute -> value stated by the prompt. Unknown words are ignored; the first mention wins."""
        found: dict[str, str] = {}
        for _, attr, value in self.matches(prompt):
            found.setdefault(attr, value)
        return found


def _validate(data: Any, path: Path) -> Vocabulary:
    def bad(reason: str) -> ConfigError:
        return ConfigError(MSG_INVALID.format(path=path, reason=reason))

    if not isinstance(data, dict) or not isinstance(data.get("attributes"), dict):
        raise bad("no 'attributes' mapping")
    attributes: dict[str, dict[str, list[str]]] = {}
    for attr, values in data["attributes"].items():
        if not isinstance(values, dict) or not values:
            raise bad(f"attribute '{attr}' has no values")
        attributes[str(attr)] = {}
        for value, phrases in values.items():
            if phrases is None:
                phrases = []
            if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
                raise bad(f"{attr}.{_value_key(value)}: phrases must be a list of non-empty strings")
            attributes[str(attr)][_value_key(value)] = [p.strip().lower() for p in phrases]
    details = data.get("details") or []
    unknown = [d for d in details if d not in attributes]
    if unknown:
        raise bad(f"details name unknown attributes: {', '.join(map(str, unknown))}")
    stereotypes = data.get("stereotypes") or {}
    if not isinstance(stereotypes, dict):
        raise bad("'stereotypes' is not a mapping")
    task_attributes = {str(k): str(v) for k, v in (data.get("task_attributes") or {}).items()}
    compounds: dict[str, dict[str, dict[str, list[str]]]] = {}
    for noun, attrs in (data.get("compounds") or {}).items():
        if not isinstance(attrs, dict):
            raise bad(f"compound '{noun}' is not a mapping")
        compounds[str(noun)] = {}
        for attr, values in attrs.items():
            if attr not in attributes or not isinstance(values, dict):
                raise bad(f"compound '{noun}' names unknown attribute '{attr}'")
            compounds[str(noun)][attr] = {}
            for value, words in values.items():
                if _value_key(value) not in attributes[attr]:
                    raise bad(f"compound '{noun}': {attr} has no value '{_value_key(value)}'")
                if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
                    raise bad(f"compound '{noun}': {attr}.{_value_key(value)} must be a list of words")
                compounds[str(noun)][attr][_value_key(value)] = [w.strip().lower() for w in words]
    for k, v in task_attributes.items():
        if v not in attributes:
            raise bad(f"task attribute '{k}' maps to unknown attribute '{v}'")
    return Vocabulary(attributes=attributes, details=[str(d) for d in details], stereotypes=stereotypes,
                      task_attributes=task_attributes, compounds=compounds, path=path)


def default_vocabulary_path() -> Path:
    from ..core.tasks import shipped_prompt_dir

    return shipped_prompt_dir() / VOCABULARY_FILE


_DEFAULT: Vocabulary | None = None


def load_vocabulary(path: str | os.PathLike | None = None) -> Vocabulary:
    """Load a vocabulary file; with no path, the shipped `prompts/vocabulary.yaml` (loaded once, cached)."""
    global _DEFAULT
    if path is None and _DEFAULT is not None:
        return _DEFAULT
    import yaml

    file = Path(path) if path is not None else default_vocabulary_path()
    if not file.is_file():
        raise ConfigError(MSG_NOT_FOUND.format(path=file))
    raw = file.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(MSG_INVALID.format(path=file, reason=exc.__class__.__name__)) from None
    vocab = _validate(data, file)
    vocab.sha256 = hashlib.sha256(raw).hexdigest()
    if path is None:
        _DEFAULT = vocab
    return vocab
