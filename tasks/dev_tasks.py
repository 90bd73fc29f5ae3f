"""Developer tasks: the whole test suite and the linters."""

from __future__ import annotations

from invoke import Context, task

#: The SoftHSM tests that run a second time on NSS softokn tokens (``CEREMONY_TEST_HSM=nss``): the CA ceremonies'
#: refusals, the pre-flight refusing a ceremony whose mechanism the module lacks and a root key ceremony on a token
#: that is not empty, issuance with a revocation and its CRL, the CRL job under openssl and as the scheduler runs it.
#: The rest is proved on softokn once, by tests/test_nss.py's rehearsal and tests/test_hsm_check.py's softokn tests:
#: not every test twice (the 30 minutes).
NSS_TESTS = ("tests/test_ceremonies.py",
             "tests/test_hsm_check.py::test_a_ceremony_needing_a_mechanism_the_module_lacks_is_refused_up_front",
             "tests/test_hsm_check.py::test_the_root_key_ceremony_needs_an_empty_token",
             "tests/test_issuance.py::test_issue_revoke_crl_openssl",
             "tests/test_crl_job.py::test_openssl_accepts_good_rejects_revoked_and_checks_sub_against_root_crl",
             "tests/test_crl_job.py::test_cli_with_the_role_command_line_and_a_pin_file")


#: Tests of NSS_TESTS that cannot hold on softokn, each for a reason tests/test_nss.py shows: pkcs11-tool cannot
#: load softokn by itself (it reaches it through p11-kit there), and softokn refuses a key for a wrapped backup.
NSS_DESELECT = ("tests/test_ceremonies.py::test_full_hierarchy_verifies_with_openssl_and_pkilint",
                "tests/test_ceremonies.py::test_key_to_be_backed_up_is_extractable_only_under_a_trusted_key")


@task
def lint(c: Context) -> None:
    """ruff over the Python code, then mypy over the engine (pyproject.toml [tool.mypy]: strict on the runner)."""
    c.run(".venv/bin/ruff check ceremony tasks tests plugins scripts", pty=False)
    c.run(".venv/bin/mypy", pty=False)


@task(help={"k": "only tests matching this expression", "fast": "skip the infrastructure tests"})
def test(c: Context, k: str = "", fast: bool = False) -> None:
    """ruff, then the whole pytest suite (unit, SoftHSM and NSS softokn integration, walks, infrastructure).

    Two runs: everything but the infrastructure tests on two workers (``--dist loadgroup`` keeps each
    ordered walk on one worker), then the infrastructure tests alone, in one process, because they share
    one set of throwaway hosts under an exclusive lock. This keeps the suite well under 30 minutes on the
    2-core machine CI runs on.
    """
    lint(c)
    select = ["-k", repr(k)] if k else []
    # --durations: the slowest tests are printed with every run, so that the 30 minutes are watched
    c.run(" ".join([".venv/bin/pytest", "-q", "-n", "2", "--dist", "loadgroup", "-m", "'not infra'",
                    "--durations=15", *select]), pty=False)
    # The second PKCS#11 implementation: tests/test_nss.py ran above (a softokn rehearsal, backup and restore
    # refusals, pkcs11-tool through p11-kit); here a few SoftHSM tests run again on softokn tokens unchanged.
    result = c.run(" ".join(["CEREMONY_TEST_HSM=nss", ".venv/bin/pytest", "-q", "-n", "2", "-m", "hsm",
                             *NSS_TESTS, *(f"--deselect {t}" for t in NSS_DESELECT), *select]), pty=False, warn=True)
    if result is not None and result.exited not in (0, 5):
        raise SystemExit(result.exited)
    if not fast:
        # Exit 5 (nothing selected, e.g. -k matching no infrastructure test) is not a failure here.
        result = c.run(" ".join([".venv/bin/pytest", "-q", "-m", "infra", "--durations=15", *select]), pty=False,
                       warn=True)
        if result is not None and result.exited not in (0, 5):
            raise SystemExit(result.exited)
