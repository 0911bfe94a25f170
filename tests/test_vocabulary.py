"""The phrase vocabulary: every phrase selects its attribute, longest phrase first, unknown words ignored."""

from __future__ import annotations

import numpy as np
import pytest

from aimfair_cli.core.errors import ConfigError
from aimfair_cli.core.tasks import TASKS
from aimfair_cli.render import (
    NATURAL,
    FaceAttributes,
    attributes_from_prompt,
    draw_attributes,
)
from aimfair_cli.render.vocabulary import MSG_DUPLICATE, MSG_NOT_FOUND, load_vocabulary

VOCAB = load_vocabulary()

# How each task attribute's 0/1 maps onto vocabulary values.
TASK_VALUES = {"Smiling": {1: "yes", 0: "no"}, "Male": {1: "male", 0: "female"}, "Female": {1: "female", 0: "male"},
               "Young": {1: "young", 0: "old"}, "White": {1: "white", 0: "non_white"}}


def test_default_is_loaded_once_and_has_a_digest():
    assert load_vocabulary() is VOCAB
    assert len(VOCAB.sha256) == 64
    assert set(VOCAB.details) <= set(VOCAB.attributes)
    assert "head_pose" in VOCAB.attributes and "head_pose" not in VOCAB.details  # the template always adds it


def test_vocabulary_values_are_what_the_renderer_draws():
    assert set(VOCAB.attributes) == set(FaceAttributes.names())


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_word_is_in_the_vocabulary(task):
    for attribute in (TASKS[task].target, TASKS[task].protected):
        vocab_attr = VOCAB.task_attributes[attribute.name]
        for value, words in attribute.words.items():
            for word in words:
                assert VOCAB.parse(f"Portrait face photo of a {word} person.") == {
                    vocab_attr: TASK_VALUES[attribute.name][value]}, word


def _all_phrases():
    for attr, values in VOCAB.attributes.items():
        for value, phrases in values.items():
            for phrase in phrases:
                yield attr, value, phrase


def test_every_phrase_selects_exactly_its_attribute_value():
    for attr, value, phrase in _all_phrases():
        assert VOCAB.lookup(phrase) == (attr, value)
        assert VOCAB.parse(f"Portrait face photo of a person with {phrase}, indeed.") == {attr: value}, phrase
        assert VOCAB.parse(phrase.upper()) == {attr: value}, phrase  # case does not matter


def test_every_compound_modifier_selects_its_value_before_its_noun():
    for noun, attrs in VOCAB.compounds.items():
        for attr, values in attrs.items():
            for value, words in values.items():
                for word in words:
                    assert VOCAB.parse(f"a person with {word} {noun}")[attr] == value, (word, noun)


@pytest.mark.parametrize("prompt, expected", [
    ("a man who is not smiling", {"gender": "male", "smiling": "no"}),
    ("a smiling female", {"smiling": "yes", "gender": "female"}),
    ("a non-white woman", {"race": "non_white", "gender": "female"}),
    ("a woman with white hair", {"gender": "female", "hair_color": "gray"}),
    ("a man with black hair", {"gender": "male", "hair_color": "black"}),
    ("a black man with sunglasses", {"race": "non_white", "gender": "male", "glasses": "sunglasses"}),
    ("a middle-aged man", {"age": "middle", "gender": "male"}),
    ("long curly dark brown hair and bright blue eyes",
     {"hair_style": "long", "hair_color": "brown", "eye_color": "blue"}),
    ("a man with a beard and a moustache", {"gender": "male", "facial_hair": "beard"}),  # first mention wins
    ("no glasses, head turned slightly left", {"glasses": "no", "head_pose": "left"}),
])
def test_longest_phrase_wins_and_first_mention_wins(prompt, expected):
    assert VOCAB.parse(prompt) == expected


@pytest.mark.parametrize("prompt", ["", "zorp glimmer, 8k, masterpiece", "smilingly malevolent", "womanhood", "!!!"])
def test_unknown_words_are_ignored(prompt):
    assert VOCAB.parse(prompt) == {}


def test_stated_attributes_are_kept_and_the_rest_are_stereotyped():
    rng = np.random.default_rng(0)
    faces = [attributes_from_prompt("Portrait face photo of a smiling male.", rng) for _ in range(200)]
    assert all(f.smiling == "yes" and f.gender == "male" for f in faces)
    # Plain prompts: frontal, young, light-skinned, short hair, plain backdrop (the narrow defaults).
    assert {f.head_pose for f in faces} == {"frontal"}
    assert {f.skin_tone for f in faces} == {"light"}
    assert {f.hair_style for f in faces} == {"short"}
    natural = [draw_attributes(NATURAL, {"smiling": "yes", "gender": "male"}, rng) for _ in range(200)]
    assert len({f.key for f in natural}) > len({f.key for f in faces})


def test_stating_one_attribute_does_not_reshuffle_the_others():
    base = attributes_from_prompt("a smiling woman", np.random.default_rng(5))
    with_glasses = attributes_from_prompt("a smiling woman with glasses", np.random.default_rng(5))
    assert with_glasses == base.replace(glasses="yes")


def test_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        load_vocabulary(path)
    assert str(exc.value) == MSG_NOT_FOUND.format(path=path)


def test_a_phrase_naming_two_values_is_refused(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("attributes:\n  smiling: {'yes': [grin]}\n  mood: {happy: [grin]}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_vocabulary(path)
    assert str(exc.value) == MSG_DUPLICATE.format(path=path, phrase="grin", first="smiling.yes", second="mood.happy")


def test_a_custom_vocabulary_file_is_read(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("attributes:\n  smiling: {'yes': [beaming], 'no': [glum]}\ndetails: []\n", encoding="utf-8")
    vocab = load_vocabulary(path)
    assert vocab.parse("a glum man") == {"smiling": "no"}
    assert vocab.phrases("smiling", "yes") == ["beaming"]
    assert load_vocabulary() is VOCAB  # the cached default is untouched
