"""The face renderers and the `procedural` generator: deterministic, prompt-following, two distinct styles."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from aimfair_cli.core.errors import UsageError
from aimfair_cli.generators.base import ImageRequest, image_seed, make_generator
from aimfair_cli.generators.diffusion import DiffusersOptions
from aimfair_cli.generators.procedural import (
    MSG_DIFFUSERS_ONLY,
    MSG_DIFFUSERS_ONLY_MANY,
    MSG_UNKNOWN_OPTIONS,
    ProceduralGenerator,
)
from aimfair_cli.render import (
    MSG_BAD_EXPRESSION,
    MSG_BAD_STYLE,
    RENDERER_VERSION,
    FaceAttributes,
    natural_attributes,
    render_face,
)
from aimfair_cli.render.face import CLOSED_LIP_SMILES, draw_params
from aimfair_cli.render.vocabulary import load_vocabulary

VOCAB = load_vocabulary()
PLAIN = "Portrait face photo of a smiling male."
# Everything visible: no hat or sunglasses hiding hair or eyes, short hair not hiding the ears.
VISIBLE = FaceAttributes(smiling="no", gender="female", hair_style="short", glasses="no", hat="no")


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def gen():
    return ProceduralGenerator(size=32)


@pytest.mark.parametrize("style", ["photo", "synthetic"])
def test_same_attributes_and_seed_give_identical_bytes(style):
    a = natural_attributes(np.random.default_rng(3), smiling=True, male=False)
    first = render_face(a, style=style, size=48, seed=11)
    assert first.size == (48, 48) and first.mode == "RGB"
    assert png(first) == png(render_face(a, style=style, size=48, seed=11))
    assert png(first) != png(render_face(a, style=style, size=48, seed=12))


def test_same_prompt_and_seed_give_identical_bytes(gen):
    req = ImageRequest(PLAIN, image_seed(0, "smiling_male", 7), 7)
    again = ProceduralGenerator(size=32).generate([req])[0]
    assert png(gen.generate([req])[0]) == png(again)


def test_an_image_does_not_depend_on_its_batch(gen):
    reqs = [ImageRequest(PLAIN, image_seed(0, "smiling_male", i), i) for i in range(3)]
    together = gen.generate(reqs)
    alone = [gen.generate([r])[0] for r in reversed(reqs)][::-1]
    assert [png(i) for i in together] == [png(i) for i in alone]


def test_every_vocabulary_phrase_sets_its_attribute(gen):
    for attr, values in VOCAB.attributes.items():
        for value, phrases in values.items():
            for phrase in phrases:
                for seed in range(3):
                    got = gen.attributes(ImageRequest(f"Portrait face photo of a person, {phrase}.", seed, 0))
                    assert getattr(got, attr) == value, (phrase, seed)


def test_every_value_of_a_drawn_attribute_changes_the_picture():
    # race is drawn through skin_tone (tested below); every other attribute is visible on its own.
    for attr, values in VOCAB.attributes.items():
        if attr == "race":
            continue
        images = {}
        for value in values:
            images[value] = png(render_face(VISIBLE.replace(**{attr: value}), style="synthetic", size=64, seed=1))
        assert len(set(images.values())) == len(images), f"{attr}: some values draw the same image"


def test_race_words_change_the_skin_tone_distribution(gen):
    def tones(prompt):
        return {gen.attributes(ImageRequest(prompt, s, 0)).skin_tone for s in range(60)}

    assert tones("a smiling white man") == {"light"}
    assert "light" not in tones("a smiling non-white man") and len(tones("a smiling non-white man")) > 1


def test_stating_a_phrase_changes_the_generated_image(gen):
    req = ImageRequest(PLAIN, 5, 0)
    with_glasses = ImageRequest(PLAIN[:-1] + " with glasses.", 5, 0)
    assert gen.attributes(with_glasses) == gen.attributes(req).replace(glasses="yes")
    assert png(gen.generate([req])[0]) != png(gen.generate([with_glasses])[0])


def test_unknown_words_are_ignored(gen):
    a = gen.attributes(ImageRequest(PLAIN, 9, 0))
    b = gen.attributes(ImageRequest(PLAIN[:-1] + ", trending on artstation, zorp, 8k.", 9, 0))
    assert a == b


def _grain(img: np.ndarray) -> float:
    """Median absolute Laplacian of the grey image: ~0 on smooth surfaces, the noise level on a grainy one."""
    g = img.mean(-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.median(np.abs(lap)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_two_styles_differ_and_only_the_photo_has_sensor_noise(seed):
    a = VISIBLE.replace(background="plain", lighting="soft")
    photo = np.asarray(render_face(a, style="photo", size=64, seed=seed), dtype=np.float32)
    synth = np.asarray(render_face(a, style="synthetic", size=64, seed=seed), dtype=np.float32)
    assert np.abs(photo - synth).mean() > 10
    assert _grain(synth) < 2.5 < 4.5 < _grain(photo)


@pytest.mark.parametrize("style", ["photo", "synthetic"])
def test_a_subtle_face_does_not_show_its_label(style):
    for seed in range(4):
        draw = lambda smiling, expression: np.asarray(render_face(VISIBLE.replace(smiling=smiling), style=style,
                                                                  size=48, seed=seed, expression=expression))
        assert np.array_equal(draw("yes", "subtle"), draw("no", "subtle"))
        for expression in ("natural", "posed"):
            assert not np.array_equal(draw("yes", expression), draw("no", expression))


def test_posed_expressions_are_the_natural_kinds_at_other_frequencies():
    """Both domains show every kind of expression (open and closed-lip smiles, still and talking unsmiling faces)
    over the same ranges; only how often each occurs differs, so the label means the same in both."""
    from aimfair_cli.render.face import POSED_CLOSED_LIP_SMILES, POSED_TALKING, TALKING

    def params(smiling: str, expression: str):
        return [draw_params(VISIBLE.replace(smiling=smiling), np.random.default_rng(seed), expression=expression)
                for seed in range(400)]

    natural_yes, posed_yes = params("yes", "natural"), params("yes", "posed")
    natural_no, posed_no = params("no", "natural"), params("no", "posed")
    share = lambda ps, closed: sum((p.mouth_open == 0) == closed for p in ps) / len(ps)
    # 400 draws: within about 3 standard errors
    assert abs(share(natural_yes, True) - CLOSED_LIP_SMILES) < 0.07
    assert abs(share(posed_yes, True) - POSED_CLOSED_LIP_SMILES) < 0.07
    assert abs(share(natural_no, False) - TALKING) < 0.07 and abs(share(posed_no, False) - POSED_TALKING) < 0.07
    for kind in (lambda p: p.mouth_open == 0, lambda p: p.mouth_open > 0):
        for nat, pos in ((natural_yes, posed_yes), (natural_no, posed_no)):
            a, b = [p.smile for p in nat if kind(p)], [p.smile for p in pos if kind(p)]
            assert a and b and abs(min(a) - min(b)) < 0.1 and abs(max(a) - max(b)) < 0.1  # the same range
    # a closed-lip smile is broader than any face whose expression does not show its label
    subtle = params("yes", "subtle") + params("no", "subtle")
    assert min(p.smile for p in posed_yes + natural_yes if p.mouth_open == 0) > max(p.smile for p in subtle) + 0.1
    assert max(p.smile for p in posed_no + natural_no) < min(p.smile for p in subtle)


def test_the_procedural_generator_draws_posed_faces():
    gen = make_generator("procedural", size=32)
    request = ImageRequest(prompt="a photo of a smiling woman", seed=11, index=0)
    attrs = gen.attributes(request)
    posed = render_face(attrs, style="synthetic", size=32, seed=request.seed, expression="posed")
    assert np.array_equal(np.asarray(gen.generate([request])[0]), np.asarray(posed))


def test_smiling_is_drawn_beyond_a_single_pixel():
    a = VISIBLE
    no = np.asarray(render_face(a, style="synthetic", size=64, seed=4), dtype=np.int16)
    yes = np.asarray(render_face(a.replace(smiling="yes"), style="synthetic", size=64, seed=4), dtype=np.int16)
    changed = np.argwhere(np.abs(no - yes).sum(-1) > 0)
    assert len(changed) > 20  # mouth, teeth or cheeks, eyes: many pixels change
    assert np.ptp(changed[:, 0]) > 5  # and not only along one row of the mouth


def test_bad_style_and_size_are_usage_errors():
    with pytest.raises(UsageError) as exc:
        render_face(VISIBLE, style="oil", seed=0)
    assert str(exc.value) == MSG_BAD_STYLE.format(style="oil")
    with pytest.raises(UsageError):
        render_face(VISIBLE, style="photo", size=8, seed=0)
    with pytest.raises(UsageError) as exc:
        render_face(VISIBLE, style="photo", seed=0, expression="smirk")
    assert str(exc.value) == "unknown expression 'smirk' (known: natural, posed, subtle)"
    assert str(exc.value) == MSG_BAD_EXPRESSION.format(expression="smirk", known="natural, posed, subtle")


def test_diffusers_options_are_refused_by_name():
    with pytest.raises(UsageError) as exc:
        make_generator("procedural", steps=20)
    assert str(exc.value) == MSG_DIFFUSERS_ONLY.format(names="--steps")
    with pytest.raises(UsageError) as exc:
        make_generator("procedural", negative_prompt="blurry", guidance=7.5)
    assert str(exc.value) == MSG_DIFFUSERS_ONLY_MANY.format(names="--guidance, --negative-prompt")
    with pytest.raises(UsageError) as exc:
        make_generator("procedural", colour="red")
    assert str(exc.value) == MSG_UNKNOWN_OPTIONS.format(names="--colour")
    for f in dataclasses.fields(DiffusersOptions):  # every diffusers option but --device is refused by name
        if f.name != "device":
            with pytest.raises(UsageError, match="applies to --generator diffusers only"):
                make_generator("procedural", **{f.name: f.default if f.default is not None else 1})


def test_describe_names_the_vocabulary_it_read():
    g = make_generator("procedural", size=48, device="cpu")
    assert g.name == "procedural"
    assert g.describe() == {"generator": "procedural", "size": 48, "style": "synthetic", "vocabulary": VOCAB.sha256,
                            "renderer": RENDERER_VERSION}
    assert g.generate([ImageRequest(PLAIN, 1, 0)])[0].size == (48, 48)
