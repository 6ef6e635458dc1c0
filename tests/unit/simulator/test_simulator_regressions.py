"""What the simulator once found, kept as regressions.

A step that ran out of attempts on a retryable failure was failed for good as if its
action could no longer take effect. Under at-least-once delivery it still can: a retryable
failure is not stored in the participant's inbox, so the same key runs again when an
earlier attempt's command, still queued after a timeout, is delivered at last, or when the
command that failed is handed over again (a lost ack, or the outbox publishing it again
after a lost confirm). The step's effect was then compensated after the steps before it,
or never: every reply to a command message was named ``reply-<command message id>``, so the
success of a redelivered command carried the id of the failure reply and was dropped as a
duplicate. Such a step is now compensated first, like one whose last attempt timed out (its
compensation cancels the key if the action never ran), and each retryable failure reply has
an id of its own.
"""

from __future__ import annotations

from core.builders import Saga, definition, sends, step

from orchestrator.core.state import Kind, SagaStatus

from .sim_invariants import check, report
from .sim_participants import ReplyIds
from .sim_world import Simulation


def test_a_step_out_of_attempts_on_a_retryable_failure_is_compensated_first() -> None:
    saga = Saga(definition(step("a"), step("b", max_attempts=2)))
    saga.succeed("a", {"v": "a"})
    saga.fail("b", retryable=True)
    saga.fire("b")  # the backoff is over: attempt 2
    saga.fail("b", retryable=True)
    assert saga.status() is SagaStatus.COMPENSATING
    assert [(send.step, send.kind) for send in sends(saga.last)] == [("b", Kind.COMPENSATION)]


def test_seed_147_an_action_redelivered_after_its_last_retryable_failure_is_compensated() -> None:
    """saga-3's s1 fails retryably on both attempts and is failed for good; the saga ends
    compensated. Then the broker hands the first attempt's command over again, it succeeds,
    and its success reply, named like the failure reply, is dropped: s1's effect stays."""
    sim = Simulation(147).run()
    violations = check(sim)
    assert violations == [], report(sim.seed, violations)


def test_seed_125_a_timed_out_attempt_that_runs_late_is_compensated_in_order() -> None:
    """saga-2's s2: attempt 2 times out (its command waits in the queue), attempt 3 fails
    retryably; s1 and s0 are compensated. Attempt 2 then runs, its late success is accepted
    and s2 is compensated last, after s0. Replies are named per outcome here, so the late
    success is not dropped."""
    sim = Simulation(125).run()
    violations = check(sim)
    assert violations == [], report(sim.seed, violations)


def test_seed_147_no_reply_is_dropped_for_carrying_the_id_of_a_different_reply() -> None:
    """A retryable failure is not stored, so a redelivered command runs again and may answer
    differently; each retryable answer has its own id, so none is dropped unread."""
    assert Simulation(147).run().stats.conflicting_replies == 0
    # With one id per command message, as before, the same seed drops one.
    assert Simulation(147, reply_ids=ReplyIds.PER_COMMAND).run().stats.conflicting_replies > 0
