"""The text-level guard, with literal finals on the client's clock (ms)."""

from __future__ import annotations

from speakflow.echo import EchoGuard


def test_a_microphone_final_repeating_a_system_final_of_the_same_moment() -> None:
    g = EchoGuard()
    g.system_final(
        "The marketing page is ready, but the pricing table still needs approval.", 10_800, 14_800
    )
    # the echo, transcribed a little later and not quite the same
    assert g.is_echo("marketing page is ready but the pricing table needs approval", 10_900, 14_950)
    assert g.marked == 1


def test_the_users_own_words_are_not_marked() -> None:
    g = EchoGuard()
    g.system_final("Yes, we can hear you fine.", 3_700, 6_000)
    assert not g.is_echo("Great, let's review the launch checklist.", 7_100, 9_700)
    assert not g.is_echo("Yes.", 3_800, 4_100)  # too short to judge: a reply, not an echo
    assert g.marked == 0


def test_the_same_words_at_another_moment_are_not_marked() -> None:
    g = EchoGuard()
    g.system_final("Then we can launch on Wednesday morning.", 19_000, 22_200)
    # the user quotes it back a minute later: their own speech
    assert not g.is_echo("then we can launch on wednesday morning", 80_000, 83_000)


def test_only_recent_system_finals_are_kept() -> None:
    g = EchoGuard()
    for i in range(40):
        g.system_final(f"remote sentence number {i} about the plan", i * 1000, i * 1000 + 900)
    assert not g.is_echo("remote sentence number 0 about the plan", 0, 900)
    assert g.is_echo("remote sentence number 39 about the plan", 39_000, 39_950)
