"""What a LINE chat message asks of Tayori (pure): 「配信停止」 and 「配信再開」, the
whole message, spaces aside, in any width."""

from __future__ import annotations

import pytest

from scheduler.core.line_chat import newsletter_request


@pytest.mark.parametrize(
    ("text", "asks"),
    [
        pytest.param("配信停止", False, id="stop"),
        pytest.param("配信再開", True, id="resume"),
        pytest.param(" 配信停止\n", False, id="spaces-around"),
        pytest.param("\u3000配信再開\u3000", True, id="full-width-spaces"),
        pytest.param("配信 停止", False, id="a-space-inside"),
        pytest.param("配信停止します", None, id="a-sentence"),
        pytest.param("配信停止。", None, id="with-punctuation"),
        pytest.param("停止", None, id="part-of-it"),
        pytest.param("", None, id="empty"),
        pytest.param("こんにちは", None, id="anything-else"),
    ],
)
def test_only_the_exact_words_ask(text: str, asks: bool | None) -> None:
    assert newsletter_request(text) is asks
