"""Tasks (target and protected attribute, with the words that state each value) and prompt files.

A prompt file `prompts/<task>.yaml` holds the task definition, its four groups (name -> target, protected,
list of prompts) and how the prompts were made. The files shipped in the repo's `prompts/` folder are
installed as the package `aimfair_cli.prompts`, so an installed `aimfair` finds them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PromptWriterError, UsageError
from .fsio import read_utf8

PROMPT_FILE_VERSION = 1


@dataclass(frozen=True)
class Attribute:
    """One binary attribute and the phrases that state each value in a prompt.

    `words[v][0]` is the canonical phrase used by the template writer; the others are accepted synonyms.
    """

    name: str  # dataset attribute name, e.g. "Smiling"
    words: dict[int, tuple[str, ...]]

    def phrase(self, value: int) -> str:
        return self.words[value][0]


@dataclass(frozen=True)
class Group:
    name: str
    target: int
    protected: int


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    target: Attribute
    protected: Attribute
    subject: str = "face"  # what the images show, used by prompt writers

    def cell_name(self, target: int, protected: int) -> str:
        """A (target, protected) cell in words, e.g. "not smiling · female"."""
        return f"{self.target.phrase(target)} · {self.protected.phrase(protected)}"

    @property
    def groups(self) -> list[Group]:
        """The four (target, protected) groups, named like `smiling_male`, `not_smiling_female`."""
        out = []
        for t in (1, 0):
            for p in (1, 0):
                name = f"{_slug(self.target.phrase(t))}_{_slug(self.protected.phrase(p))}"
                out.append(Group(name=name, target=t, protected=p))
        return out

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        known = ", ".join(g.name for g in self.groups)
        raise UsageError(f"unknown group '{name}' for task '{self.name}' (known: {known})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "subject": self.subject,
            "target": {"name": self.target.name, "words": {int(k): list(v) for k, v in self.target.words.items()}},
            "protected": {"name": self.protected.name, "words": {int(k): list(v) for k, v in self.protected.words.items()}},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Task":
        def attr(a: dict[str, Any]) -> Attribute:
            return Attribute(name=a["name"], words={int(k): tuple(v) for k, v in a["words"].items()})

        return cls(name=d["name"], dataset=d["dataset"], target=attr(d["target"]), protected=attr(d["protected"]),
                   subject=d.get("subject", "face"))


def _slug(phrase: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")


SMILING = Attribute("Smiling", {1: ("smiling", "smile", "smiles", "grinning", "grin"),
                                0: ("not smiling", "non-smiling", "neutral expression", "serious expression", "unsmiling")})
MALE = Attribute("Male", {1: ("male", "man", "men", "boy", "gentleman"),
                          0: ("female", "woman", "women", "girl", "lady")})
YOUNG = Attribute("Young", {1: ("young", "youthful"), 0: ("old", "older", "elderly", "senior", "aged")})
FEMALE = Attribute("Female", {1: ("female", "woman", "women", "girl", "lady"),
                              0: ("male", "man", "men", "boy", "gentleman")})
WHITE = Attribute("White", {1: ("white", "caucasian", "white-skinned"),
                            0: ("non-white", "black", "asian", "indian", "latino", "hispanic", "middle eastern", "person of color")})

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("smiling_male", "celeba", SMILING, MALE),
        Task("smiling_young", "celeba", SMILING, YOUNG),
        Task("young_male", "celeba", YOUNG, MALE),
        Task("female_white", "utkface", FEMALE, WHITE),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"unknown task '{name}' (known: {', '.join(TASKS)})") from None


def _mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text, flags=re.IGNORECASE) is not None


def states_value(prompt: str, attribute: Attribute, value: int) -> bool:
    """True if the prompt states `value` of `attribute` and does not state the other value.

    Longer phrases are matched first so "not smiling" is not read as "smiling" and "non-white" not as "white".
    """
    text = prompt
    found: dict[int, bool] = {0: False, 1: False}
    phrases = sorted(((p, v) for v, ps in attribute.words.items() for p in ps), key=lambda pv: -len(pv[0]))
    for phrase, v in phrases:
        if _mentions(text, phrase):
            found[v] = True
            text = re.sub(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", " ", text, flags=re.IGNORECASE)
    return found[value] and not found[1 - value]


MAX_PROMPT_CHARS = 1000  # CLIP keeps 77 tokens (~300 characters); a tokenizer's time grows with the text's length
MSG_PROMPT_NOT_TEXT = "{path}: group {group}: prompt {i} is not text ({value!r}); quote it in the YAML file"
MSG_PROMPT_TOO_LONG = ("{path}: group {group}: prompt {i} is {n} characters long; at most {max} are read (the text "
                       "encoder keeps 77 tokens)")


def check_prompt(prompt: str, task: Task, group: Group, *, max_words: int = 60,
                 max_chars: int = MAX_PROMPT_CHARS) -> str | None:
    """Why `prompt` is not usable for `group`, or None if it is.

    CLIP reads 77 tokens; `max_words` keeps prompts comfortably below that, and `max_chars` bounds a prompt made
    of one very long word (checked first: splitting a megabyte of text is itself slow).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        return "empty prompt"
    if len(prompt) > max_chars:
        return f"longer than {max_chars} characters"
    if len(prompt.split()) > max_words:
        return f"longer than {max_words} words"
    if not states_value(prompt, task.target, group.target):
        return f"does not state '{task.target.phrase(group.target)}'"
    if not states_value(prompt, task.protected, group.protected):
        return f"does not state '{task.protected.phrase(group.protected)}'"
    return None


# ---- prompt files ---------------------------------------------------------------------------------------


@dataclass
class PromptFile:
    task: Task
    groups: dict[str, list[str]]  # group name -> prompts
    plain: dict[str, str] = field(default_factory=dict)  # group name -> the single plain prompt
    made_by: dict[str, Any] = field(default_factory=dict)  # writer name, model, seed, ...
    # group name -> how varied its prompts are (writers.diversity.diversity: distinct contexts, distinct-bigram
    # ratio, rejections by reason); empty for files written before it was measured
    diversity: dict[str, dict[str, Any]] = field(default_factory=dict)

    def prompts(self, group: str, *, kind: str = "contextual") -> list[str]:
        self.task.group(group)
        if kind == "plain":
            if group not in self.plain:
                raise PromptWriterError(f"no plain prompt for group '{group}'")
            return [self.plain[group]]
        if not self.groups.get(group):
            raise PromptWriterError(f"no prompts for group '{group}'")
        return self.groups[group]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROMPT_FILE_VERSION,
            "task": self.task.to_dict(),
            "made_by": self.made_by,
            **({"diversity": self.diversity} if self.diversity else {}),
            "groups": {
                g.name: {
                    "target": g.target,
                    "protected": g.protected,
                    **({"plain": self.plain[g.name]} if g.name in self.plain else {}),
                    "prompts": list(self.groups.get(g.name, [])),
                }
                for g in self.task.groups
            },
        }


def load_prompt_file(path: str | os.PathLike) -> PromptFile:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PromptWriterError(f"prompt file not found: {path}")
    try:
        d = yaml.safe_load(read_utf8(path, PromptWriterError))
        task = Task.from_dict(d["task"])
        groups = {name: list(g.get("prompts") or []) for name, g in d["groups"].items()}
        plain = {name: g["plain"] for name, g in d["groups"].items() if g.get("plain")}
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise PromptWriterError(f"{path}: not a valid prompt file ({exc.__class__.__name__}: {exc})") from None
    for name in groups:
        task.group(name)
        _check_prompt_texts(path, name, groups[name])
    diversity = d.get("diversity") if isinstance(d.get("diversity"), dict) else {}
    return PromptFile(task=task, groups=groups, plain=plain, made_by=dict(d.get("made_by") or {}),
                      diversity={str(k): v for k, v in diversity.items() if isinstance(v, dict)})


def _check_prompt_texts(path: Path, group: str, prompts: list[Any]) -> None:
    """Every prompt of a file is text of bounded length (a YAML number is not a prompt)."""
    for i, p in enumerate(prompts, 1):
        if not isinstance(p, str):
            raise PromptWriterError(MSG_PROMPT_NOT_TEXT.format(path=path, group=group, i=i, value=p))
        if len(p) > MAX_PROMPT_CHARS:
            raise PromptWriterError(MSG_PROMPT_TOO_LONG.format(path=path, group=group, i=i, n=len(p),
                                                               max=MAX_PROMPT_CHARS))


def save_prompt_file(path: str | os.PathLike, pf: PromptFile) -> Path:
    import yaml

    from .fsio import atomic_write_text

    text = yaml.safe_dump(pf.to_dict(), sort_keys=False, allow_unicode=True, width=200)
    atomic_write_text(path, text)
    return Path(path)


def shipped_prompt_dir() -> Path:
    """The folder of prompt files shipped with aimfair (the repo's `prompts/`)."""
    from importlib.resources import files

    return Path(str(files("aimfair_cli.prompts")))


def find_prompt_file(task: str, run_dir: str | os.PathLike | None = None) -> Path:
    """`<run_dir>/prompts/<task>.yaml` if present, else the shipped `prompts/<task>.yaml`."""
    get_task(task)
    local = Path(run_dir or Path.cwd()) / "prompts" / f"{task}.yaml"
    if local.is_file():
        return local
    shipped = shipped_prompt_dir() / f"{task}.yaml"
    if shipped.is_file():
        return shipped
    raise PromptWriterError(f"no prompt file for task '{task}' (looked in {local.parent} and {shipped.parent})")


def task_for_group(group: str) -> Task:
    """The built-in task that has a group of this name (e.g. `smiling_male` -> task smiling_male)."""
    matches = [t for t in TASKS.values() if any(g.name == group for g in t.groups)]
    if not matches:
        raise UsageError(f"no task has a group named '{group}'; pass --prompts or --task")
    if len(matches) > 1:
        names = ", ".join(t.name for t in matches)
        raise UsageError(f"group '{group}' belongs to several tasks ({names}); pass --task")
    return matches[0]
