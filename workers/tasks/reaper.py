"""The stuck-job reaper (Celery beat): jobs whose worker died are requeued, or failed when out
of attempts; approved requests whose message was lost are sent again (service.jobs.lifecycle);
exact removals past their due date are flagged (service.finetune.deadlines). ``shred_keys``
destroys the data keys of requests whose retention has ended (service.erasure.shredding)."""

from __future__ import annotations

from celery import shared_task

from service.core.storage import drop_stale_merged
from service.db.base import utcnow
from service.erasure.host_purges import mark_absent
from service.erasure.shredding import shred_due
from service.finetune.deadlines import flag_overdue_exact
from service.jobs.reaper import reap
from service.queue.names import TASK_REAP_STUCK_JOBS, TASK_SHRED_KEYS
from service.queue.resends import forget_old_resends
from service.rules.lost import resend_lost_activations
from workers.base import DbTask, db_task_options

ACTOR = "reaper"


@shared_task(name=TASK_REAP_STUCK_JOBS, **db_task_options(max_retries=3))
def reap_stuck_jobs(self: DbTask) -> dict[str, int]:
    with self.transaction() as session:
        result = reap(session, self.settings, ACTOR)
        overdue = flag_overdue_exact(session, ACTOR)
        activations = resend_lost_activations(session, self.settings)
        forget_old_resends(session, utcnow())
    # Catch-up checkpoint: events committed by a process that died before signing are covered
    # within one reaper interval (service.audit.anchor).
    with self.transaction(audited=False) as session:
        self.anchor.checkpoint_head(session)
    return {
        "requeued": result.requeued,
        "failed": result.failed,
        "resent": result.resent + activations,
        "exact_overdue": overdue,
    }


@shared_task(name=TASK_SHRED_KEYS, **db_task_options(max_retries=3))
def shred_keys(self: DbTask) -> dict[str, int]:
    with self.transaction() as session:
        shredded = shred_due(session, self.settings, "retention", utcnow())
        # Hosts that did not confirm deleting their copies within the timeout: absent.
        absent = mark_absent(session, self.settings, ACTOR, utcnow())
    # This worker host's merged weights of erased checkpoints (erased on another host).
    dropped = drop_stale_merged(self.settings)
    return {"shredded": shredded, "merged_dropped": len(dropped), "hosts_absent": absent}
