"""``hedge-agent run``: the daemon's entry point. It opens the composition root (``App``),
takes the locks, hands the pipeline its parts (``App.daemon_parts``) and runs the ticks in one
task group.

Shape borrowed from silverback's runner: OS signals only set an event; the loop runs in one
task group and checks the event between ticks; shutdown always runs (the composition root
closes every client and stops the simulator's fork anvil; the devnet's own anvil belongs to
``hedge-agent devnet``).
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from agent.app import App
from agent.config import Settings
from agent.core.errors import Halt
from agent.pipeline.runner import Agent, TickCount, tick_loop

log = structlog.get_logger("agent")


async def run(settings: Settings, *, once: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = False
    count = TickCount()
    try:
        async with App(settings) as app:
            # One daemon per store and journal (the second refuses); fork anvils a daemon
            # killed with -9 left behind are stopped.
            app.take_locks()
            try:
                async with asyncio.TaskGroup() as tasks:
                    # The daemon's long-running tasks share this group (the tick loop, the
                    # metrics server, the notifier): one failing cancels the others, and the
                    # app closes after all of them have ended.
                    ops = app.ops
                    await ops.start(tasks)  # /healthz answers during set-up and backfill
                    try:
                        agent = Agent(app.daemon_parts())
                        await agent.setup()
                        started = True
                        await agent.backfill()
                        await tasks.create_task(
                            tick_loop(
                                agent.tick,
                                stop=stop,
                                interval_s=settings.agent.tick_interval_s,
                                error_budget=settings.agent.error_budget,
                                error_budget_s=settings.agent.error_budget_s,
                                tick_timeout_s=settings.agent.tick_timeout_s,
                                once=once,
                                count=count,
                            ),
                            name="ticks",
                        )
                    except Halt as exc:
                        ops.halted(str(exc))
                        raise
                    finally:
                        # Queued notices (a halt) get their chance to go out, then the
                        # server and the notifier end so the group can.
                        await ops.stop()
            except BaseExceptionGroup as group:
                # One failing task: raise its error itself (a Halt ends as one line).
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if started:  # a failed start-up ends with the one-line error alone
            log.info("agent.stopped", ticks=count.ok, failed_ticks=count.failed)
    return 0
