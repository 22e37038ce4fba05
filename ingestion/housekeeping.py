"""Housekeeping: expired documents are deleted on a schedule, in the app itself.

Readers never serve an expired document (they compare `expiresAt` with the time of the read);
this frees the space. The same run then collects the tombstones and watermarks whose grace period
(TOMBSTONE_GRACE_DAYS) is over, from their own index (`~gc|YYYY-MM-DD`; docs/write-rules.md). The write path lists every document that carries `expiresAt` under its
expiry day (`~expiry|YYYY-MM-DD`), so the purge reads the days that have passed instead of
scanning the table, and deletes a listed document only if its index entity still says it has
expired (it may have been rewritten with a later expiry or none since).

The schedule is the app setting PURGE_SCHEDULE (six-field NCRONTAB, UTC: `0 30 2 * * *` is
02:30 every day). Locally: `POST /admin/functions/purge_expired` on the dev host (or `func start`).
"""

from __future__ import annotations

import logging
import time

import azure.functions as func

from shared.settings import batch_settings, get_settings
from shared.storage import InsightsStore, build_table_client
from shared.storage.errors import StorageError

bp = func.Blueprint()
log = logging.getLogger("c4s.housekeeping")


@bp.function_name("purge_expired")
@bp.timer_trigger(schedule="%PURGE_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def purge_expired(timer: func.TimerRequest) -> None:
    from shared.storage import collect_tombstones, purge_expired  # the write path: with the first purge

    started = time.perf_counter()
    if timer.past_due:
        log.info("the purge is running late (its schedule was missed, e.g. while no instance ran)")
    settings = batch_settings(get_settings())
    async with InsightsStore(
        build_table_client(settings),
        settle_seconds=settings.write_settle_seconds,
        grace_seconds=settings.tombstone_grace_days * 86400,
    ) as store:
        try:
            deleted = await purge_expired(store)
        except StorageError as exc:  # what was purged stays purged; the next run completes the rest
            log.error("the purge did not finish: %s", exc.detail)
            deleted = 0
        collected = await collect_tombstones(store)
    log.info(
        "purged %d expired document(s) and collected %d tombstone(s) and watermark(s) past their grace in %.0f ms",
        deleted,
        collected,
        (time.perf_counter() - started) * 1000,
    )
