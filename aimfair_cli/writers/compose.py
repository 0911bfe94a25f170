"""The composed mode of the LLM writers (the default): the model writes only the context of each prompt, aimfair
writes the person.

The model fills the fields of `context_schema` (age, hair, clothing, accessories, pose, scene, lighting, camera);
`compose` puts them after the group's canonical phrase, the subject of the group's plain prompt ("Portrait face
photo of a smiling male, ..."), so every prompt states the group's target and protected values by construction,
however weak the model. What a context may still get wrong is to contradict its group — a frown in a smiling
group, "her" or "a woman" in a male group, a second person — and `rejection` says why such a context is
rejected. Fields that would restate a value the group fixes are left out of the schema (no `age` field in a
task about age).
"""

from __future__ import annotations

import collections
import re
from typing import Any, Sequence

from ..core.tasks import Attribute, Group, Task

# (field, what the model is told to write in it); the order is the order of the composed prompt.
FIELDS = (
    ("age", "apparent age in a few words, e.g. in the thirties"),
    ("hair", "hair colour, length and style"),
    ("clothing", "what the person wears"),
    ("accessories", "glasses, hat, jewellery, or none"),
    ("pose", "head orientation and angle"),
    ("scene", "the place or background"),
    ("lighting", "the light"),
    ("camera", "shot and lens"),
)
FIELD_CHARS = 32  # a schema-bound field holds at most this many characters (~5 words): 8 fields stay < 60 words
TOKENS_PER_CONTEXT = 120  # 8 keys (~4 tokens each with quotes) + 8 values of up to ~8 tokens + separators
EMPTY = {"", "none", "n/a", "na", "null", "no", "-", "nothing"}  # a field value that adds nothing
SPARE_CONTEXTS = 2  # asked for beyond those missing: a small model often repeats a context
INSTRUCTION_VERSION = 3  # bump when the composed instruction's wording changes (recorded in the prompt file)

# Words that state a value of a task attribute beyond the task's own list (tasks.py), keyed by (attribute
# name, value they state). Pronouns state a gender; a frown states "not smiling".
EXTRA_WORDS: dict[tuple[str, int], tuple[str, ...]] = {
    ("Smiling", 1): ("laughing", "laugh", "beaming", "toothy", "teeth showing", "cheerful", "happy", "joyful"),
    ("Smiling", 0): ("frown", "frowning", "scowl", "scowling", "sad", "crying", "angry", "stern", "serious",
                     "pouting", "expressionless", "straight face", "grim"),
    ("Male", 1): ("he", "his", "him", "himself", "guy", "beard", "bearded", "moustache", "mustache", "goatee",
                  "stubble"),
    ("Male", 0): ("she", "her", "hers", "herself", "lipstick"),
    ("Young", 1): ("teenage", "teenager", "youthful", "twenties", "student"),
    ("Young", 0): ("elderly", "wrinkles", "wrinkled", "gray hair", "grey hair", "white hair", "silver hair",
                   "middle-aged", "retired", "fifties", "sixties", "seventies", "eighties"),
    ("White", 1): ("fair skin", "pale skin", "light skin", "porcelain skin"),
    ("White", 0): ("dark skin", "brown skin", "tan skin", "african", "east asian", "south asian", "latina"),
}
EXTRA_WORDS[("Female", 1)] = EXTRA_WORDS[("Male", 0)]
EXTRA_WORDS[("Female", 0)] = EXTRA_WORDS[("Male", 1)]
# A prompt shows one person: these put someone else in the picture.
OTHER_PEOPLE = ("couple", "two people", "friends", "family", "crowd", "group of", "people", "children", "child",
                "kids", "baby", "wife", "husband", "girlfriend", "boyfriend", "mother", "father", "daughter", "son",
                "partner", "together", "another person", "colleagues", "team")
# Not for a training photo of a face.
UNSAFE = ("naked", "nude", "nudity", "topless", "lingerie", "underwear", "sexy", "erotic", "blood", "gun", "weapon")
MSG_UNSAFE = "unsuitable for a face photo ('{word}')"
MSG_CONTRADICTS = "contradicts '{phrase}' ('{word}')"
MSG_OTHER_PERSON = "puts another person in the picture ('{word}')"
MSG_NO_CONTEXT = "empty context"
MIN_PARTS = 2  # a context of one detail ("the light") adds too little to a prompt
MSG_THIN = "too little context ({k} detail)"
MAX_REPEATS = 3  # a word said more often than this is a small model looping ("camera camera camera camera")
MSG_LOOPING = "repeats '{word}' {k} times"


def fields_for(task: Task) -> tuple[str, ...]:
    """The context fields for `task`: no `age` field where age is a task attribute (it would restate it)."""
    fixed = {task.target.name, task.protected.name}
    return tuple(name for name, _ in FIELDS if not (name == "age" and "Young" in fixed))


def context_schema(task: Task, want: int, *, bounded: bool = True) -> dict[str, Any]:
    """The JSON schema of a reply holding exactly `want` contexts: {"contexts": [{field: string} x want]}.
    `bounded=False` leaves out string lengths (OpenAI's strict mode refuses them)."""
    text: dict[str, Any] = {"type": "string"}
    if bounded:
        text = {"type": "string", "minLength": 1, "maxLength": FIELD_CHARS}
    names = fields_for(task)
    item = {"type": "object", "properties": {n: dict(text) for n in names}, "required": list(names),
            "additionalProperties": False}
    return {
        "type": "object",
        "properties": {"contexts": {"type": "array", "minItems": want, "maxItems": want, "items": item}},
        "required": ["contexts"],
        "additionalProperties": False,
    }


def subject(task: Task, group: Group) -> str:
    """The start of every composed prompt: the group's plain prompt without its full stop."""
    from .template import plain_prompt

    return plain_prompt(task, group).rstrip(".")


# the words of each field's description, without its example ("e.g. ..."), which is a fine value
_DESCRIBED = {name: set(re.findall(r"[a-z]+", what.split("e.g.")[0])) for name, what in FIELDS}


def _clean(value: str, key: str | None = None) -> str:
    """The value as it goes into the prompt, or "" for one that adds nothing: "none", mostly punctuation (a small
    model's stray brackets), one word three times or more (a loop), or two or more words all from the field's own description ("head orientation and
    angle", copied from the instruction)."""
    value = " ".join(str(value).split()).strip(" .,;:\"'")
    if value.lower() in EMPTY or sum(ch.isalnum() or ch == " " for ch in value) < len(value) / 2:
        return ""
    looped = collections.Counter(w for w in re.findall(r"[a-z]+", value.lower()) if len(w) > 3)
    if looped and looped.most_common(1)[0][1] >= 3:  # "camera_camera_lens_camera_camera": the field looped
        return ""
    said = set(re.findall(r"[a-z]+", value.lower())) - {"the", "a", "an", "and", "or", "of"}
    if key in _DESCRIBED and len(said) >= 2 and said <= _DESCRIBED[key]:  # one word ("glasses") may be meant
        return ""
    return value


def context_text(context: dict[str, Any] | str, task: Task) -> str:
    """The context as the comma-separated phrase that follows the subject (known fields first, in order)."""
    if isinstance(context, str):
        return _clean(context)
    names = fields_for(task)
    ordered = [k for k in names if k in context] + [k for k in context if k not in names]
    parts = []
    for key in ordered:
        value = context.get(key)
        value = _clean(value, key) if isinstance(value, str) else ""
        if not value:
            continue
        if key == "clothing" and not re.match(r"(?i)(wearing|in|dressed|with)\b", value):
            value = "wearing " + value  # "a blue shirt" reads as clothing, not as a second subject
        parts.append(value)
    return ", ".join(parts)


def compose(task: Task, group: Group, context: dict[str, Any] | str) -> str:
    """The final prompt: the group's canonical subject, then the context."""
    text = context_text(context, task)
    return f"{subject(task, group)}, {text}." if text else f"{subject(task, group)}."


def _found(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text, flags=re.IGNORECASE) is not None


def _opposite_words(attr: Attribute, value: int) -> tuple[str, ...]:
    return tuple(attr.words[1 - value]) + EXTRA_WORDS.get((attr.name, 1 - value), ())


def rejection(context: dict[str, Any] | str, task: Task, group: Group) -> str | None:
    """Why the context is rejected: it is empty, thin or looping, contradicts the group (states the other value
    of its target or protected attribute), adds a person or is unsuitable; None if it is usable. "not smiling" is read before "smiling" (longest phrase first)."""
    text = context_text(context, task)
    if not text:
        return MSG_NO_CONTEXT
    parts = [p for p in text.split(",") if p.strip()]
    if len(parts) < MIN_PARTS:
        return MSG_THIN.format(k=len(parts))
    counts = collections.Counter(w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3)
    word, k = counts.most_common(1)[0] if counts else ("", 0)
    if k > MAX_REPEATS:
        return MSG_LOOPING.format(word=word, k=k)
    for attr, value in ((task.target, group.target), (task.protected, group.protected)):
        own = sorted(attr.words[value] + EXTRA_WORDS.get((attr.name, value), ()), key=len, reverse=True)
        rest = text
        for phrase in own:  # the group's own words are masked first: "non-white" holds "white"
            rest = re.sub(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", " ", rest, flags=re.IGNORECASE)
        for word in sorted(_opposite_words(attr, value), key=len, reverse=True):
            if _found(rest, word):
                return MSG_CONTRADICTS.format(phrase=attr.phrase(value), word=word)
    for word in OTHER_PEOPLE:
        if _found(text, word):
            return MSG_OTHER_PERSON.format(word=word)
    for word in UNSAFE:
        if _found(text, word):
            return MSG_UNSAFE.format(word=word)
    return None


def build_instruction(task: Task, group: Group, n: int) -> list[dict[str, str]]:
    """The chat messages asking for `n` contexts for `group`."""
    target, protected = task.target.phrase(group.target), task.protected.phrase(group.protected)
    names = fields_for(task)
    described = "; ".join(f"{name}: {what}" for name, what in FIELDS if name in names)
    system = ("You write short scene descriptions for a text-to-image model that makes training photos for a fair "
              "image classifier. You answer with JSON only.")
    user = "\n".join([
        f"Write {'one context' if n == 1 else f'{n} different contexts'} for a realistic {task.subject} photo of one person who is {target} and "
        f"{protected}. The person is already described; write only the context around them.",
        f"Fields of each context: {described}. Each field a few words.",
        *(["Make every context different from the others in every field."] if n > 1 else []),
        f"Do not describe the facial expression, the gender or anything that contradicts \"{target}\" or "
        f"\"{protected}\", and no other people.",
        # No example values: a small model copies them into every context.
        f'Answer with only a JSON object {{"contexts": [...]}} whose list holds {n} object{"s" if n > 1 else ""} with the keys '
        f'{", ".join(names)}, each a string.',
    ])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def follow_up(*, accepted: int, missing: int, rejected: Sequence[tuple[str, str]], error: str | None,
              shown: int) -> str:
    lines = []
    if error:
        lines.append(f'Your reply could not be used: {error}. Answer with only a JSON object {{"contexts": [...]}}.')
    else:
        lines.append(f"{accepted} of your contexts were accepted.")
    if rejected and shown:
        lines.append("These were rejected:")
        lines += [f'- "{p}": {why}' for p, why in rejected[:shown]]
    elif rejected:  # reasons only: a small model copies a context it is shown, the wrong words included
        lines.append("Rejected because: " + "; ".join(dict.fromkeys(why for _, why in rejected)) + ".")
    lines.append(f'Write {missing} more, different from every earlier context, as {{"contexts": [...]}}.')
    return "\n".join(lines)


def contexts_in(data: Any) -> list[dict[str, Any] | str] | None:
    """The contexts in a parsed reply: {"contexts": [...]}, any list value, a bare list or one context object."""
    if isinstance(data, dict):
        listed = data.get("contexts", next((v for v in data.values() if isinstance(v, list)), None))
        if listed is None and any(isinstance(v, str) for v in data.values()):
            listed = [data]  # a single context object
        data = listed
    if not isinstance(data, list):
        return None
    return [item for item in data if isinstance(item, (dict, str))]
