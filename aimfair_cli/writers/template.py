"""The `template` prompt writer: offline, deterministic contextual prompts built from the vocabulary.

Each prompt states the group's target and protected values and adds two or three details, one of them always
a head pose (the paper's best prompts add head poses, Tab. 5), e.g.

    Portrait face photo of a smiling male with black hair, glasses and head turned slightly left.
    Portrait face photo of a female who is not smiling, with a round face, in a park, looking up.

Details are drawn from the vocabulary's `details` attributes, worded with the vocabulary's own phrases (so
the `procedural` generator reads every one of them back), never about the task's own attributes, never two
values of one attribute, and never contradicting the group or each other:

- female groups get no facial hair; male groups get no lipstick/makeup detail (a choice: it keeps the
  template close to what an LLM asked for "diverse details" writes; the procedural generator would render it);
- young groups get no gray hair; an age detail of "young" gets no gray hair either;
- where the task does not state gender, facial hair and lipstick never appear together;
- bald never comes with a hair colour, sunglasses never with an eye colour;
- an absence ("no glasses") is stated only where the generator's stereotyped defaults could otherwise draw
  the thing ("no makeup" for women), never where they never would ("no hat");
- tasks about race (female_white) get no skin-tone detail (it would restate or contradict the protected value);
- no detail phrase contains a word that states a value of the task's attributes ("white hair" in a task
  about white / non-white people).

Candidates that break these rules, fail `tasks.check_prompt` or repeat an earlier prompt (exactly or as a
near-duplicate, `diversity.near_key`) are rejected and counted by reason in `rejections`, so the prompt file's
diversity figures compare the template with an LLM writer.

The same (seed, task, group) always gives the same prompts in the same order; a resumed run (`existing`)
continues that order, so it ends with the same list as an uninterrupted one.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import random
import re
from typing import Any, Callable, Sequence

from ..core.errors import PromptWriterError, UsageError
from ..core.tasks import Group, Task, check_prompt, states_value
from .diversity import MSG_NEAR_DUPLICATE, near_key

log = logging.getLogger(__name__)

PREFIX = "Portrait face photo of"
MAX_TRIES_PER_PROMPT = 200  # candidates tried per requested prompt before giving up

MSG_DUPLICATE = "duplicate"
MSG_LLM_OPTION = "option --{flag} applies to --writer openai or transformers only"
MSG_TOO_FEW = "template writer could make only {got} distinct prompts of {want} for group {group}"
MSG_RULES = "details that contradict each other"  # a candidate broke a rule of `_pair_allowed`

# Task attributes stated by the subject noun; the others become adjectives or a "who is ..." clause.
NOUN_ATTRIBUTES = {"Male", "Female"}
DEFAULT_NOUN = "person"
# Adjective order before the noun: expression, then age, then race ("a smiling elderly white female").
_ADJ_ORDER = {"Smiling": 0, "age": 1, "Young": 1, "White": 2}

# How each detail attribute is worded. "adjective": before the noun; "trailing": a clause after the rest;
# anything else: an item of the "with ..." list.
SLOTS = {"age": "adjective", "head_pose": "trailing", "background": "trailing", "lighting": "trailing"}
# Head poses that read well inside the "with ..." list ("with glasses and head turned slightly left").
_POSE_IN_WITH = ("head ", "chin ")
# Nouns a "with ..." item may end with: mass/plural ones take no article, countable ones take a/an.
_MASS_NOUNS = {"hair", "bangs", "curls", "waves", "glasses", "eyeglasses", "spectacles", "sunglasses", "shades",
               "earrings", "lipstick", "makeup", "lips", "eyes", "skin", "cheeks", "stubble"}
_COUNT_NOUNS = {"haircut", "cut", "bob", "fringe", "afro", "ponytail", "bun", "knot", "updo", "head", "beard",
                "moustache", "mustache", "goatee", "shadow", "hat", "cap", "beanie", "fedora", "earring",
                "complexion", "tone", "face", "jaw", "jawline", "chin"}
_NOT_ADJECTIVES = {"teenager"}  # one-word age phrases that are nouns
_NOT_TRAILING = {"outdoor", "indoor", "sunlit"}  # adjectives that cannot stand alone after a comma
_NEGATIVE = ("no", "none")  # values that state an absence ("no glasses", "no beard")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _subject(task: Task, group: Group, extra_adjectives: Sequence[tuple[str, str]] = ()) -> tuple[str, str]:
    """("a smiling elderly male", " who is not smiling") for the group, with optional (key, adjective)s."""
    noun, adjectives, clauses = DEFAULT_NOUN, list(extra_adjectives), []
    for attr, value in ((task.target, group.target), (task.protected, group.protected)):
        phrase = attr.phrase(value)
        if attr.name in NOUN_ATTRIBUTES:
            noun = phrase
        elif " " in phrase:
            clauses.append(phrase)
        else:
            adjectives.append((attr.name, phrase))
    adjectives.sort(key=lambda kv: _ADJ_ORDER.get(kv[0], 9))
    words = [a for _, a in adjectives] + [noun]
    clause = f" who is {_join(clauses)}" if clauses else ""
    return f"{_article(words[0])} {' '.join(words)}", clause


def plain_prompt(task: Task, group: Group) -> str:
    """The single plain prompt of a group: "Portrait face photo of a smiling male." (paper §3.1, after [56])."""
    subject, clause = _subject(task, group)
    return f"{PREFIX} {subject}{clause}."


def _with_item(phrase: str) -> str | None:
    """The phrase as an item of "with ...", with an article where it needs one; None if it cannot be one."""
    if phrase.startswith(("with ", "wearing ", "in ", "without ")):
        return None
    last = phrase.split()[-1]
    if phrase.startswith("no ") or last in _MASS_NOUNS:
        return phrase
    if last in _COUNT_NOUNS:
        return f"{_article(phrase)} {phrase}"
    return None


def _word(attr: str, phrase: str) -> str | None:
    """How a vocabulary phrase appears in a prompt in the slot of `attr`, or None if it does not fit."""
    slot = SLOTS.get(attr, "with")
    if slot == "adjective":
        return phrase if " " not in phrase and phrase not in _NOT_ADJECTIVES else None
    if slot == "trailing":
        return phrase if phrase not in _NOT_TRAILING else None
    return _with_item(phrase)


def _group_facts(task: Task, group: Group) -> dict[str, str]:
    """What the group states about gender, age and race, in vocabulary values."""
    facts: dict[str, str] = {}
    for attr, value in ((task.target, group.target), (task.protected, group.protected)):
        if attr.name == "Male":
            facts["gender"] = "male" if value else "female"
        elif attr.name == "Female":
            facts["gender"] = "female" if value else "male"
        elif attr.name == "Young":
            facts["age"] = "young" if value else "old"
        elif attr.name == "White":
            facts["race"] = "white" if value else "non_white"
    return facts


def _value_allowed(attr: str, value: str, facts: dict[str, str]) -> bool:
    """Group-level rules (see the module docstring)."""
    if attr == "facial_hair" and facts.get("gender") == "female":
        return False
    if attr == "lipstick" and facts.get("gender") == "male":
        return False
    if attr == "hair_color" and value == "gray" and facts.get("age") == "young":
        return False
    if attr == "skin_tone" and "race" in facts:
        return False
    return True


def _maybe_stereotyped(stereotypes: dict[str, Any], attr: str, facts: dict[str, str]) -> set[str]:
    """Values the generator's defaults may draw for `attr` in this group: the base distribution plus every
    `when` rule not contradicted by what the group states."""
    values = {_key(v) for v in (stereotypes.get("base") or {}).get(attr, {})}
    for rule in stereotypes.get("when") or []:
        cond = rule.get("if") or {}
        if all(facts.get(k, _key(v)) == _key(v) for k, v in cond.items()):
            values |= {_key(v) for v in (rule.get("then") or {}).get(attr, {})}
    return values


def _key(value: Any) -> str:
    if isinstance(value, bool):  # YAML 1.1 reads an unquoted yes/no as a bool
        return "yes" if value else "no"
    return str(value)


def _pair_allowed(details: dict[str, str], facts: dict[str, str]) -> bool:
    """Rules between the details of one prompt."""
    if details.get("hair_style") == "bald" and "hair_color" in details:
        return False
    if details.get("glasses") == "sunglasses" and "eye_color" in details:
        return False
    if details.get("age") == "young" and details.get("hair_color") == "gray":
        return False
    if "gender" not in facts and details.get("facial_hair", "none") != "none" and details.get("lipstick") == "yes":
        return False
    return True


def _seed_for(seed: int, task: Task, group: Group) -> int:
    digest = hashlib.sha256(f"template:{seed}:{task.name}:{group.name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _norm(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt.strip().lower())


class TemplateWriter:
    """Contextual prompts from templates and the vocabulary; needs no model and no network."""

    name = "template"

    def __init__(self, *, vocabulary: Any = None, **unknown: Any) -> None:
        for key in unknown:
            raise UsageError(MSG_LLM_OPTION.format(flag=key.replace("_", "-")))
        from ..render.vocabulary import Vocabulary, load_vocabulary

        self.vocabulary = vocabulary if isinstance(vocabulary, Vocabulary) else load_vocabulary(vocabulary)
        self.rejections: dict[str, collections.Counter] = {}  # group -> rejected candidates by reason

    def describe(self) -> dict[str, Any]:
        return {"writer": self.name, "vocabulary": self.vocabulary.sha256}

    # -- the pieces a prompt is drawn from --------------------------------------------------------------

    @staticmethod
    def _states_task_value(phrase: str, task: Task) -> bool:
        return any(states_value(phrase, a, v) for a in (task.target, task.protected) for v in (0, 1))

    def _options(self, task: Task, group: Group) -> dict[str, dict[str, list[str]]]:
        """attribute -> value -> worded phrases usable for this group (head_pose included)."""
        vocab = self.vocabulary
        facts = _group_facts(task, group)
        skip = {vocab.task_attributes.get(a.name) for a in (task.target, task.protected)}
        attrs = [a for a in vocab.details if a not in skip and a != "head_pose"] + ["head_pose"]
        options: dict[str, dict[str, list[str]]] = {}
        for attr in attrs:
            if attr not in vocab.attributes:
                continue
            defaults = _maybe_stereotyped(vocab.stereotypes, attr, facts)
            for value in vocab.values(attr):
                if not _value_allowed(attr, value, facts):
                    continue
                # An absence the generator's defaults always give anyway ("no hat") adds nothing; one that
                # counters a default ("no makeup" for women) is a real detail.
                if value in _NEGATIVE and defaults and defaults <= {value}:
                    continue
                worded = []
                for phrase in vocab.phrases(attr, value):
                    text = _word(attr, phrase)
                    # Keep only wordings the generator reads back as exactly this (attribute, value).
                    if text is None or self._states_task_value(text, task):
                        continue
                    if [(a, v) for _, a, v in vocab.matches(text)] != [(attr, value)]:
                        continue
                    worded.append(text)
                if worded:
                    options.setdefault(attr, {})[value] = worded
        return options

    def _candidate(self, rng: random.Random, task: Task, group: Group, options, facts) -> str | None:
        details = [a for a in options if a != "head_pose"]
        chosen = rng.sample(details, rng.choice((1, 2)) if len(details) >= 2 else len(details))
        values = {a: rng.choice(sorted(options[a])) for a in chosen}
        if not _pair_allowed(values, facts):
            return None
        pose_value = rng.choice(sorted(options["head_pose"]))
        pose = rng.choice(options["head_pose"][pose_value])
        adjectives, with_items, trailing = [], [], []
        for attr in chosen:
            text = rng.choice(options[attr][values[attr]])
            slot = SLOTS.get(attr, "with")
            (adjectives if slot == "adjective" else trailing if slot == "trailing" else with_items).append(
                (attr, text) if slot == "adjective" else text
            )
        if pose.startswith(_POSE_IN_WITH):
            with_items.append(pose)
        else:
            trailing.append(pose)
        subject, clause = _subject(task, group, adjectives)
        text = f"{PREFIX} {subject}{clause}"
        if with_items:
            text += ("," if clause else "") + " with " + _join(with_items)
        for item in trailing:
            text += ", " + item
        return text + "."

    # -- the writer interface ---------------------------------------------------------------------------

    def write(
        self,
        task: Task,
        group: Group,
        n: int,
        *,
        seed: int = 0,
        existing: Sequence[str] = (),
        on_partial: Callable[[list[str]], None] | None = None,
    ) -> list[str]:
        prompts: list[str] = []
        seen: set[str] = set()
        rejected = self.rejections.setdefault(group.name, collections.Counter())
        for p in existing:
            if len(prompts) < n and check_prompt(p, task, group) is None and near_key(p) not in seen:
                prompts.append(p)
                seen.add(near_key(p))
        options = self._options(task, group)
        if "head_pose" not in options:
            raise PromptWriterError(MSG_TOO_FEW.format(got=len(prompts), want=n, group=group.name))
        facts = _group_facts(task, group)
        rng = random.Random(_seed_for(seed, task, group))
        added = False
        for _ in range(MAX_TRIES_PER_PROMPT * max(n, 1)):
            if len(prompts) >= n:
                break
            text = self._candidate(rng, task, group, options, facts)
            why = MSG_RULES if text is None else check_prompt(text, task, group)
            if why is None and near_key(text) in seen:
                why = MSG_DUPLICATE if any(_norm(p) == _norm(text) for p in prompts) else MSG_NEAR_DUPLICATE
            if why is not None:
                rejected[why] += 1
                continue
            prompts.append(text)
            seen.add(near_key(text))
            added = True
        if added and on_partial is not None:
            on_partial(list(prompts))  # instant to make, so one call at the end is enough
        if len(prompts) < n:
            raise PromptWriterError(MSG_TOO_FEW.format(got=len(prompts), want=n, group=group.name))
        return prompts

    def plain_prompt(self, task: Task, group: Group) -> str:
        return plain_prompt(task, group)
