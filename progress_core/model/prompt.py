"""The one place the training and probing token layout is defined (docs/algorithm.md#training)."""

from __future__ import annotations

from collections.abc import Sequence

from progress_core.model.config import VICUNA_V1_SYSTEM

IMAGE_TOKEN = "<image>"


USER_TAG, ASSISTANT_TAG = "USER:", "ASSISTANT:"


IGNORE_INDEX = -100


CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


VICUNA_V1_CHAT_TEMPLATE = '{{ "' + VICUNA_V1_SYSTEM + ' " }}' + CHAT_TEMPLATE


def image_token_count(processor) -> int:
    """Image placeholder tokens per image, exactly as ``LlavaProcessor`` expands ``<image>``."""
    crop = processor.image_processor.crop_size
    n = (crop["height"] // processor.patch_size) * (crop["width"] // processor.patch_size)
    n += processor.num_additional_image_tokens
    if processor.vision_feature_select_strategy == "default":
        n -= 1
    return n


def _encode_text(tokenizer, text: str, image_id: int, n_image_tokens: int) -> list[int]:
    pieces = text.split(IMAGE_TOKEN)
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            ids.extend([image_id] * n_image_tokens)
        if piece.strip():
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids


def normalise_turns(conversations: Sequence[dict], has_image: bool) -> list[tuple[str, str | None]]:
    """(human, gpt) pairs of a LLaVA conversation; ``<image>`` put first in turn 1 iff there is an image.

    LLaVA's preprocessing moves the image tag to the start of the first human turn; a text-only row keeps
    no tag, so its batch needs no pixel values for it.
    """
    pairs: list[tuple[str, str | None]] = []
    human: str | None = None
    for turn in conversations:
        who = turn.get("from")
        value = str(turn.get("value", ""))
        if who in ("human", "user"):
            human = value.replace(IMAGE_TOKEN, "").strip()
        elif who in ("gpt", "assistant") and human is not None:
            pairs.append((human, value.strip()))
            human = None
    if human is not None:
        pairs.append((human, None))
    if pairs and has_image:
        pairs[0] = (f"{IMAGE_TOKEN}\n{pairs[0][0]}", pairs[0][1])
    return pairs


def encode_conversation(
    tokenizer,
    pairs: Sequence[tuple[str, str | None]],
    n_image_tokens: int,
    image_id: int,
    prompt_only: bool = False,
    system: str | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids and labels for ``[system ]USER: q ASSISTANT: a</s>`` rounds; labels only on answers + EOS.

    LLaVA trains every round of the conversation and masks the human side (``docs/algorithm.md#training``);
    ``system`` (the Vicuna v1 system prompt in real mode) opens the first round, masked too. With
    ``prompt_only`` the first human turn is rendered with a trailing ``ASSISTANT:`` for generation
    (``docs/algorithm.md#probe-and-judge``: the probe answers the first human turn).
    """
    ids = [tokenizer.bos_token_id]
    labels = [IGNORE_INDEX]
    for turn, (human, answer) in enumerate(pairs):
        opening = f"{system} " if system and turn == 0 else ""
        prompt = _encode_text(tokenizer, f"{opening}{USER_TAG} {human} {ASSISTANT_TAG}", image_id, n_image_tokens)
        ids.extend(prompt)
        labels.extend([IGNORE_INDEX] * len(prompt))
        if prompt_only:
            break
        if answer is None:
            continue
        reply = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids.extend(reply)
        labels.extend(reply)
    return ids, labels
