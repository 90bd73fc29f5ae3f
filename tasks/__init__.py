"""The operator's front door: Invoke tasks, thin over the ``ceremony`` engine.

Invoke finds this package as ``tasks``. Each module holds the tasks of one stage and exposes a
``Collection``; this file only assembles them, so that people working on different stages never
edit the same file. Run ``invoke --list`` to see every task.
"""

from invoke import Collection

from . import (
    audit_tasks,
    backup_tasks,
    bench_ocsp_tasks,
    bench_tasks,
    ca_tasks,
    ceremony_tasks,
    crl_tasks,
    dev_tasks,
    docs_tasks,
    hosts_tasks,
    hsm_tasks,
    lifecycle_tasks,
    ocsp_tasks,
    offline_tasks,
    script_tasks,
)

ns = Collection()
ns.add_collection(ceremony_tasks.ns, name="ceremony")
ceremony_tasks.ns.add_task(script_tasks.script)
ceremony_tasks.ns.add_task(offline_tasks.offline_check, name="offline-check")
for _lifecycle in (lifecycle_tasks.renew_subordinate, lifecycle_tasks.certify_sealing_key, lifecycle_tasks.destroy_key,
                   lifecycle_tasks.init_token, lifecycle_tasks.new_root, lifecycle_tasks.cross_certify,
                   lifecycle_tasks.terminate, lifecycle_tasks.change_pin,
                   lifecycle_tasks.rekey_subordinate, lifecycle_tasks.certify_rekey):
    ceremony_tasks.ns.add_task(_lifecycle)
ns.add_task(ceremony_tasks.rehearse)
ns.add_task(dev_tasks.test)
ns.add_task(dev_tasks.lint)
ns.add_collection(hosts_tasks.ns, name="hosts")
ns.add_collection(docs_tasks.ns, name="docs")
ns.add_collection(ca_tasks.ns, name="ca")
ns.add_collection(backup_tasks.ns, name="backup")
ns.add_collection(audit_tasks.ns, name="audit")
ns.add_collection(crl_tasks.ns, name="crl")
ns.add_collection(ocsp_tasks.ns, name="ocsp")
ns.add_collection(bench_tasks.ns, name="bench")
bench_tasks.ns.add_task(bench_ocsp_tasks.ocsp)
ns.add_collection(hsm_tasks.ns, name="hsm")


def _long_options_only(collection: Collection) -> None:
    """No automatic one-letter options: Invoke hands them out by name order, so ``-h`` could end up
    meaning ``--rehearsal`` and a letter could change meaning when an option is added. At a ceremony
    every option is spelled out."""
    for t in collection.tasks.values():
        t.auto_shortflags = False
    for sub in collection.collections.values():
        _long_options_only(sub)


_long_options_only(ns)
