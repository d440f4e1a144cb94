"""Bounded retries of provider calls and the pause of a failing profile.

Provider APIs fail now and then for reasons that go away (a busy LXD
daemon, a Nova API restart, a timeout). :func:`create` retries a provider
``create`` with exponential backoff until ``vcluster:faults:create_attempts``
tries or ``create_deadline`` seconds are used up, whichever comes first.
Between two tries it deletes whatever the failed try left behind (only
instances tagged with this request's nodes and request id), so a retry never
meets its own leftovers.

Errors that another try cannot fix (quota, bad policy, a missing image) are
raised at once.

A profile whose expands keep failing is paused: ``failures`` failed expand
requests within ``window`` seconds refuse further expands of that profile for
``pause`` seconds (pillar ``vcluster:faults``). Failures are read from the
registry's audit log, so every runner process sees the same pause and a
master restart does not forget it.
"""

import logging
import time

from vcluster.errors import PolicyError, ProviderError, QuotaExceeded, sentence

log = logging.getLogger(__name__)

#: Words in a provider error that no retry can fix.
PERMANENT_WORDS = ("no image", "quota", "not found in policy", "is required", "already has instances")
#: Marks the refusal of a paused profile (refusals are not failures themselves).
PAUSED_MARK = "is paused after"
#: Defaults of a provider's API-call retries: retries after the first try, seconds one call may
#: spend retrying, seconds before the first retry (doubled after each). OpenStack's
#: ``api_retries``, ``api_retry_deadline`` and ``api_retry_backoff`` default to these.
API_RETRIES, API_RETRY_DEADLINE, API_RETRY_BACKOFF = 4, 60.0, 0.5


class ProfilePaused(PolicyError):
    """Expands of a profile are refused for a while after repeated failures."""


def _faults(policy):
    from vcluster.policy import Faults

    return getattr(policy, "faults", None) or Faults()


def transient(exc):
    """True when another try may succeed."""
    if isinstance(exc, (QuotaExceeded, PolicyError)):
        return False
    if isinstance(exc, ProviderError):
        text = str(exc).lower()
        return not any(word in text for word in PERMANENT_WORDS)
    return isinstance(exc, (OSError, ConnectionError, TimeoutError))


def call(func, attempts, backoff, deadline, is_transient=transient, before_retry=None, on_retry=None,
         clock=time.monotonic, wait=None, quiet=False):
    """``func()``, tried up to ``attempts`` times until ``deadline`` (a ``clock`` value).

    The one retry loop of the product (provider creates, every API call of
    the OpenStack, LXD and OpenNebula providers, Salt wheel calls). Waits ``backoff``, then twice as long, ...
    between tries (never past the deadline). ``before_retry(exc)`` runs
    before each new try (clean-up), ``on_retry(attempt, exc, delay)``
    reports it (``quiet``: only it; otherwise a warning is logged too). The
    last error is raised when tries or time run out, or at once when it is
    not transient. ``wait(seconds)`` defaults to an interruptible event wait.
    """
    if wait is None:
        import threading

        _never = threading.Event()
        wait = _never.wait
    attempt = 0
    delay = backoff
    while True:
        attempt += 1
        try:
            return func()
        except Exception as exc:  # noqa: BLE001 - classified below
            left = deadline - clock()
            if attempt >= attempts or not is_transient(exc) or left <= delay:
                raise
            if not quiet:
                log.warning("attempt %d of %d failed (%s); retrying in %.1f s", attempt, attempts, exc, delay)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            if delay > 0:
                wait(delay)
            if before_retry is not None:
                before_retry(exc)
            delay = delay * 2 if delay > 0 else 0


def api_call(func, is_transient, retries=API_RETRIES, backoff=API_RETRY_BACKOFF, deadline=API_RETRY_DEADLINE,
             on_retry=None, wait=time.sleep):
    """``func()`` as one provider API call: :func:`call` with ``retries`` retries within ``deadline`` s.

    Quiet (the provider's ``on_retry`` reports); ``is_transient(exc)`` is the
    provider's own reading of its API's errors. The last error is raised
    unchanged: the provider maps it to its one-sentence message.
    """
    return call(func, retries + 1, backoff, time.monotonic() + deadline, is_transient=is_transient,
                on_retry=on_retry, wait=wait, quiet=True)


def causes(exc):
    """``exc`` and every exception behind it (``__cause__``, ``__context__``, ``reason``, exception args)."""
    seen, todo = [], [exc]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or any(current is s for s in seen):
            continue
        seen.append(current)
        todo.extend([current.__cause__, current.__context__, getattr(current, "reason", None), *current.args])
    return seen


def unsent(exc):
    """True when ``exc`` shows that the request never reached the server.

    Connection refused, a missing unix socket, a failed name lookup or a
    connect timeout: a call that failed so may be sent again even when it
    is not idempotent (a create). A reset or a read timeout after the
    request went out is not such a proof.
    """
    import urllib3.exceptions

    never = (ConnectionRefusedError, FileNotFoundError, urllib3.exceptions.ConnectTimeoutError)
    return any(isinstance(e, never) for e in causes(exc))


def create(ctx, profile, provider, specs):
    """``provider.create(specs)`` with bounded retries (see module doc).

    ``profile`` is the :class:`~vcluster.policy.Profile` being expanded.
    Raises :class:`ProfilePaused` before any call when the profile is paused.
    """
    check_pause(ctx.registry, ctx.policy, profile.name)
    faults = _faults(ctx.policy)
    names = {s.name for s in specs}
    requests = {s.tags.get("registry_id") for s in specs}
    cluster = ctx.policy.cluster

    def leftovers(_exc):
        try:
            stale = [i.id for i in provider.list(cluster)
                     if i.tags.get("node") in names and i.tags.get("registry_id") in requests]
            if stale:
                log.warning("deleting %d instance(s) left by the failed try: %s", len(stale), ", ".join(stale))
                provider.delete(stale)
        except Exception as exc:  # noqa: BLE001 - the next try reports what is wrong
            log.warning("clean-up before retry failed: %s", exc)

    def report(attempt, exc, delay):
        ctx.events.progress(
            f"creating instances failed (try {attempt} of {faults.create_attempts}): {sentence(exc)}; "
            f"retrying in {delay:.0f} s", attempt=attempt)
        ctx.events.fire(f"vcluster/provider/{provider.name}/retry",
                        {"profile": profile.name, "attempt": attempt, "error": sentence(exc),
                         "nodes": sorted(names)})

    def once():
        instances = provider.create(specs)
        if len(instances) != len(specs):  # the contract: one instance per spec, in order
            raise ProviderError(f"provider {provider.name} returned {len(instances)} instance(s) "
                                f"for {len(specs)} node(s)")
        return instances

    try:
        return call(once, faults.create_attempts, faults.create_backoff,
                    time.monotonic() + faults.create_deadline, before_retry=leftovers, on_retry=report)
    except Exception as exc:
        # a provider that broke its all-or-nothing promise (timeout) leaves nothing behind either
        leftovers(exc)
        raise


def pause_state(registry, policy, profile, now=None):
    """``(paused_until or None, failures)`` of ``profile`` from the audit log.

    Paused when ``failures`` failed requests fall within one ``window``; the
    pause lasts ``pause`` seconds from the last of them.
    """
    faults = _faults(policy)
    now = time.time() if now is None else now
    if faults.failures <= 0 or faults.pause <= 0:
        return None, []
    found = registry.failed_requests(profile, now - faults.window - faults.pause, exclude=PAUSED_MARK)
    times = [ts for ts, _, _ in found]
    until = None
    for i in range(faults.failures - 1, len(times)):
        if times[i] - times[i - faults.failures + 1] <= faults.window:
            until = times[i] + faults.pause
    if until is not None and until > now:
        return until, found
    return None, found


def check_pause(registry, policy, profile, now=None):
    """Raise :class:`ProfilePaused` (one sentence) while ``profile`` is paused."""
    now = time.time() if now is None else now
    until, found = pause_state(registry, policy, profile, now)
    if until is None:
        return
    faults = _faults(policy)
    last = found[-1][2] or "no reason recorded"
    raise ProfilePaused(
        f"profile {profile} {PAUSED_MARK} {faults.failures} failed expands within {faults.window:g} s "
        f"(last: {sentence(last)}); expands of it are refused for {int(until - now) + 1} more s "
        f"(vcluster:faults:pause)"
    )
